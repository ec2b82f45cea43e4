// Attacks on the way the agent reaches a VM pod's sockets, with real processes, real sockets and
// real cgroups: a tenant plants symlinks in its run volume, or serves its socket from a process
// that is not in its pod. Each must be refused; the genuine case must work (with a real QEMU).
import { type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { native, O_PATH } from '../../agent/src/native.js';
import { QmpConnectError, QmpDisconnectedError } from '../../agent/src/qmp/errors.js';
import { connectPodQmp, connectPodStream, openPodSocket, PeerRefusedError, SocketRefusedError } from '../../agent/src/vm/connect.js';
import type { PodVmIdentity } from '../../agent/src/vm/identity.js';
import { startGuest, type Guest } from '../../kit/guest.js';
import { scratchDir } from './harness.js';
import { fakePod, listener, podCgroupsAvailable, PodCgroups, removeFakePod, type FakePod } from './pod-fixture.js';
import { poll } from '../../kit/poll.js';

const describeRoot = podCgroupsAvailable() ? describe : describe.skip;

describeRoot('VM pod sockets: reached beneath the pod directory, peer in the pod', () => {
  let root: string;
  let kubelet: string;
  let a: FakePod;
  let b: FakePod;
  const cgroups = new PodCgroups();
  const children: ChildProcess[] = [];
  let guest: Guest | undefined;
  const vmOf = (p: FakePod, name: string): PodVmIdentity => ({ namespace: `ns-${name}`, name, podName: `pod-${name}`, podUid: p.uid });

  beforeAll(async () => {
    root = scratchDir('pod-sockets');
    kubelet = path.join(root, 'kubelet');
    a = fakePod(kubelet);
    b = fakePod(kubelet);
    // Pod B's genuine socket, served from inside pod B.
    const bServer = await listener(path.join(b.mount, 'launcher.sock'), 'from-b\n');
    children.push(bServer);
    cgroups.join(b.uid, bServer.pid!);
  });

  afterAll(async () => {
    await guest?.kill('SIGKILL');
    for (const c of children) c.kill('SIGKILL');
    await poll('the pods\' processes to end', () => children.every((c) => c.exitCode !== null || c.signalCode !== null), 10_000);
    cgroups.remove();
    removeFakePod(a);
    removeFakePod(b);
    fs.rmSync(root, { recursive: true, force: true });
  });

  it("openBeneath refuses a socket that is a symlink to another pod's socket", async () => {
    const planted = path.join(a.runDir, 'launcher.sock');
    fs.symlinkSync(path.join(b.runDir, 'launcher.sock'), planted);
    try {
      expect(() => native().openBeneath(path.join(kubelet, 'pods', a.uid), 'volumes/kubernetes.io~empty-dir/vmsnap-run/launcher.sock', O_PATH)).toThrow(
        expect.objectContaining({ code: 'ELOOP' }),
      );
      expect(() => openPodSocket(kubelet, vmOf(a, 'a'), 'launcher.sock')).toThrow(/refused launcher.sock of VM ns-a\/a .*a symlink is in its path/);
      await expect(connectPodStream(kubelet, vmOf(a, 'a'), 'launcher.sock', 2000)).rejects.toThrow(SocketRefusedError);
      // A relative link, and one that climbs out of the pod directory, are refused the same way.
      fs.rmSync(planted);
      fs.symlinkSync(path.relative(a.runDir, path.join(b.runDir, 'launcher.sock')), planted);
      expect(() => openPodSocket(kubelet, vmOf(a, 'a'), 'launcher.sock')).toThrow(/symlink/);
    } finally {
      fs.rmSync(planted, { force: true });
    }
  });

  it('openBeneath refuses a symlinked directory component', () => {
    // Pod C's run volume directory itself is a link to pod B's.
    const c = path.join(kubelet, 'pods', a.uid.replace(/^.{8}/, 'cccccccc'));
    fs.mkdirSync(path.join(c, 'volumes/kubernetes.io~empty-dir'), { recursive: true });
    fs.symlinkSync(b.runDir, path.join(c, 'volumes/kubernetes.io~empty-dir/vmsnap-run'));
    const vmC: PodVmIdentity = { namespace: 'ns-c', name: 'c', podName: 'pod-c', podUid: path.basename(c) };
    expect(() => openPodSocket(kubelet, vmC, 'launcher.sock')).toThrow(/a symlink is in its path/);
    // And a link higher up: pods/<uid>/volumes -> pod B's volumes.
    const d = path.join(kubelet, 'pods', a.uid.replace(/^.{8}/, 'dddddddd'));
    fs.mkdirSync(d, { recursive: true });
    fs.symlinkSync(path.join(kubelet, 'pods', b.uid, 'volumes'), path.join(d, 'volumes'));
    expect(() => openPodSocket(kubelet, { ...vmC, podUid: path.basename(d) }, 'launcher.sock')).toThrow(/a symlink is in its path/);
    // The same socket reached without links is fine.
    const fd = openPodSocket(kubelet, vmOf(b, 'b'), 'launcher.sock');
    fs.closeSync(fd);
  });

  it('refuses a socket in the pod volume whose peer is in another pod, or in no pod', async () => {
    const sock = path.join(a.mount, 'launcher.sock');
    const impostor = await listener(sock, 'impostor\n');
    children.push(impostor);
    // In no pod's cgroup: a process of the node (or another tenant's process outside pods).
    await expect(connectPodStream(kubelet, vmOf(a, 'a'), 'launcher.sock', 2000)).rejects.toThrow(
      new RegExp(`refused the socket launcher.sock of VM ns-a/a \\(pod pod-a\\): the process listening on it \\(pid ${impostor.pid}\\) does not belong to the pod: it is in no pod cgroup`),
    );
    // In pod B's cgroup: another tenant's process serving pod A's socket.
    cgroups.join(b.uid, impostor.pid!);
    const refused = connectPodStream(kubelet, vmOf(a, 'a'), 'launcher.sock', 2000);
    await expect(refused).rejects.toThrow(PeerRefusedError);
    await expect(connectPodStream(kubelet, vmOf(a, 'a'), 'launcher.sock', 2000)).rejects.toThrow(`it is in the cgroup of pod ${b.uid}, not of pod ${a.uid}`);
    // Moved into pod A: now it is pod A's own socket.
    cgroups.join(a.uid, impostor.pid!);
    const s = await connectPodStream(kubelet, vmOf(a, 'a'), 'launcher.sock', 2000);
    const line = await new Promise<string>((r) => s.once('data', (d) => r(String(d))));
    s.destroy();
    expect(line).toBe('impostor\n');
    impostor.kill('SIGKILL');
  });

  it("connects to a real QEMU's QMP in the pod and refuses it from the wrong pod", async () => {
    guest = await startGuest({ dir: a.mount, name: 'pod-a', memMiB: 64, fillMiB: 8 });
    await expect(connectPodQmp(kubelet, vmOf(a, 'a'), 'qmp.sock', 5000)).rejects.toThrow(/refused the QMP socket qmp.sock of VM ns-a\/a .* in no pod cgroup/);
    cgroups.join(b.uid, guest.pid);
    await expect(connectPodQmp(kubelet, vmOf(a, 'a'), 'qmp.sock', 5000)).rejects.toThrow(`in the cgroup of pod ${b.uid}`);
    cgroups.join(a.uid, guest.pid);
    // QEMU serves one QMP client at a time from a listen backlog of one: right after the refused
    // connections it may still be closing them, and a new client can meet a full backlog (EAGAIN)
    // or be dropped with them. The genuine peer must get through once QEMU has caught up.
    const { client, status } = await poll('a QMP session with the QEMU in pod A', async () => {
      const c = await connectPodQmp(kubelet, vmOf(a, 'a'), 'qmp.sock', 5000).catch((err) => {
        if (err instanceof QmpConnectError) return undefined;
        throw err;
      });
      const st = await c?.execute<{ status: string }>('query-status').catch((err) => {
        c.close();
        if (err instanceof QmpDisconnectedError) return undefined;
        throw err;
      });
      return c && st && { client: c, status: st };
    }, 20_000);
    try {
      expect(client.socketPath).toBe(path.join(a.runDir, 'qmp.sock'));
      expect(client.peerCredentials().pid).toBe(guest.pid);
      expect(['running', 'paused']).toContain(status.status);
    } finally {
      client.close();
    }
    // The socket file swapped for a link to it after the fact is refused again.
    fs.renameSync(path.join(a.runDir, 'qmp.sock'), path.join(a.runDir, 'real.sock'));
    fs.symlinkSync('real.sock', path.join(a.runDir, 'qmp.sock'));
    await expect(connectPodQmp(kubelet, vmOf(a, 'a'), 'qmp.sock', 5000)).rejects.toThrow(/symlink/);
  });
});
