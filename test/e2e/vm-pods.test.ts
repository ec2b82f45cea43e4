// VM pods end to end without a kubelet: a real API server, the operator and an agent with
// vmSource 'pods' as processes, Pod objects bound to the agent's node, the kubelet's pod directory
// layout on the host, real cgroups named after the pod uids, and the real launcher
// (dist/agent/launcher/main.js) as the VM container: the pod's user (uid 10001), in the pod's
// cgroup, owning the QEMU it starts. The agent must find the VM by its Pod, save and restore it
// through the checked sockets with only the chart's RBAC (also lazily: the snapshot's fd handed to
// the launcher), never start QEMU itself, and refuse what a tenant plants or what VM pods do not
// support yet.
import { type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { VM_LAUNCHER_SOCKET, VM_LAUNCHER_START_ENV, type LauncherReply } from '../../api/vm-pod.js';
import { snapshotFilePath } from '../../agent/src/daemon/paths.js';
import { processAlive } from '../../agent/src/daemon/qemu-control.js';
import { addFdSet, configureMigration, fileUri, type MigrationInfo } from '../../agent/src/engine/migration.js';
import { QmpClient } from '../../agent/src/qmp/client.js';
import { SNAPSHOT_FORMAT_VERSION, STREAM_OFFSET, writeHeader } from '../../agent/src/snapshot-file/header.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { headerTrust } from '../../agent/src/daemon/header-trust.js';
import { createNamespace, kubectl, kubectlOk } from '../../stack/controlplane.js';
import { guestArgs, type GuestAssets, expectVerifying } from '../../kit/guest.js';
import {
  canRunAsPodUser,
  fakePod,
  launcherRequest,
  podCgroupsAvailable,
  PodCgroups,
  podUserAssets,
  POD_UID,
  removeFakePod,
  spawnLauncher,
  type FakePod,
} from '../engine/pod-fixture.js';
import { stopProcess } from '../engine/harness.js';
import { apply, getJson, waitForPhase } from './objects.js';
import { startStack, type AgentProcess, type Stack } from '../../stack/e2e.js';
import { poll } from '../../kit/poll.js';
import { killQemusUnder, qemuPidsMentioning, procArgv, qemuRunState, qmpExecute } from '../../kit/qemu.js';
import { vmSnapshot, vmRestore } from '../../kit/manifests.js';

const describeRoot = podCgroupsAvailable() ? describe : describe.skip;

type Status = Extract<LauncherReply, { ok: true }>;

describeRoot('VM pods (vmSource: pods)', () => {
  let stack: Stack;
  let agent: AgentProcess;
  let kubelet: string;
  let ns: string;
  let assets: GuestAssets;
  const cgroups = new PodCgroups();
  const pods: FakePod[] = [];
  const launchers: ChildProcess[] = [];

  beforeAll(async () => {
    stack = await startStack([]);
    kubelet = path.join(stack.workDir, 'kubelet');
    // The pod's user reaches its run volume under the kubelet directory, and reads the guest's kernel.
    assets = await podUserAssets(stack.workDir);
    // Only what the chart grants the agent (pods get/list/watch among it): no extra RBAC here.
    agent = await stack.startAgent('node-a', { env: { VMSNAP_VM_SOURCE: 'pods', VMSNAP_KUBELET_ROOT_DIR: kubelet } });
    ns = await createNamespace('vmpods');
  }, 30 * 60 * 1000);

  afterAll(async () => {
    // The launchers stop their QEMUs on SIGTERM; what is left after that is killed.
    await Promise.all(launchers.map((l) => stopProcess(l)));
    for (const p of pods) killQemusUnder(p.mount);
    await poll('the pods\' QEMUs to end', () => pods.every((p) => qemuPidsMentioning(p.mount).length === 0), 10_000);
    cgroups.remove();
    for (const p of pods) removeFakePod(p);
    if (ns) await kubectl(['delete', 'namespace', ns, '--wait=false']);
    await stack?.stop();
    if (process.env.VMSNAP_KEEP_E2E) console.log(`logs kept in ${stack?.workDir}`);
    else if (stack) fs.rmSync(stack.workDir, { recursive: true, force: true });
  });

  /** A Pod object bound to the agent's node and marked Running (no kubelet runs here); returns its uid. */
  async function podObject(namespace: string, podName: string, vmName: string): Promise<string> {
    await apply(
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: podName, labels: { 'vmsnap.io/vm': vmName } },
        spec: { nodeName: agent.nodeName, containers: [{ name: 'vm', image: 'vmsnap/vm:test' }] },
      },
      namespace,
    );
    await kubectlOk(['patch', 'pod', podName, '-n', namespace, '--subresource=status', '--type=merge', '-p', '{"status":{"phase":"Running"}}']);
    return (await kubectlOk(['get', 'pod', podName, '-n', namespace, '-o', 'jsonpath={.metadata.uid}'])).trim();
  }

  /** The pod's run volume on the node (and as the pod sees it); spawnLauncher hands it to the pod's user. */
  function runVolume(uid: string): FakePod {
    const pod = fakePod(kubelet, uid);
    pods.push(pod);
    return pod;
  }

  async function launcherStatus(pod: FakePod, op = 'status'): Promise<Status> {
    const r = await launcherRequest(path.join(pod.mount, VM_LAUNCHER_SOCKET), JSON.stringify({ op }));
    if (!r.ok) throw new Error(`launcher ${op} failed: ${r.error}`);
    return r;
  }

  /**
   * The VM container: the real launcher with the pod's QEMU command line, started in `wait` mode,
   * moved into the pod's cgroup, then asked to `start`, so that its QEMU is born in that cgroup.
   * Its output goes to <workDir>/launcher-<uid>.log.
   */
  async function vmPod(pod: FakePod, name: string, extraArgs: string[] = []): Promise<{ launcher: ChildProcess; serialPath: string }> {
    const argv = guestArgs(assets, { dir: pod.mount, name, memMiB: 128, fillMiB: 32, seed: 7, extraArgs, pod: { serial: 'file' } });
    const launcher = spawnLauncher(pod.mount, argv, { [VM_LAUNCHER_START_ENV]: 'wait' });
    launchers.push(launcher);
    const log = fs.createWriteStream(path.join(stack.workDir, `launcher-${pod.uid.slice(0, 8)}.log`));
    launcher.stdout!.pipe(log);
    launcher.stderr!.pipe(log);
    await poll(`the launcher of pod ${pod.uid} to answer (its log is in ${stack.workDir})`, async () => {
      if (launcher.exitCode !== null) throw new Error(`the launcher of pod ${pod.uid} exited (${launcher.exitCode}); its log is in ${stack.workDir}`);
      return launcherStatus(pod).catch(() => undefined);
    });
    cgroups.join(pod.uid, launcher.pid!);
    expect(await launcherStatus(pod, 'start')).toMatchObject({ ok: true, state: 'running', generation: 1 });
    const serialPath = path.join(pod.runDir, 'serial.log');
    await expectVerifying(serialPath);
    return { launcher, serialPath };
  }

  async function inventoryVm(namespace: string, name: string): Promise<Record<string, any> | undefined> {
    const inv = JSON.parse(await kubectlOk(['get', 'vminventory', agent.nodeName, '-o', 'json']));
    return (inv.status?.vms ?? []).find((v: any) => v.namespace === namespace && v.name === name);
  }

  function eventuallyInventory(namespace: string, name: string, accept: (vm: Record<string, any>) => boolean): Promise<Record<string, any>> {
    return poll(
      `the inventory of ${agent.nodeName} to show ${namespace}/${name} as expected`,
      async () => {
        const vm = await inventoryVm(namespace, name).catch(() => undefined);
        return vm && accept(vm) ? vm : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
  }

  it('saves a VM pod and restores it in place through its launcher; the agent never starts QEMU', async () => {
    const uid = await podObject(ns, 'vm-web-0', 'web');
    const pod = runVolume(uid);
    const { launcher, serialPath } = await vmPod(pod, 'web');
    const listed = await eventuallyInventory(ns, 'web', (v) => v.state === 'running');
    expect(listed.qmpSocket).toBe(path.join(kubelet, 'pods', uid, 'volumes/kubernetes.io~empty-dir/vmsnap-run/qmp.sock'));
    expect(listed.memoryBytes).toBe(128 << 20);

    await apply(vmSnapshot('web-1', { vmName: 'web' }), ns);
    const snap = await waitForPhase('vmsnapshot/web-1', ns, 'Succeeded');
    const file = snap.status.file.path as string;
    expect(readHeader(file).metadata.vm).toMatchObject({ namespace: ns, name: 'web' });

    // The operator recorded the pod; a copy runs in a new pod made from it, which needs the launcher's
    // container (this Pod object has none mounting vmsnap-run): refused, and no pod made.
    expect(snap.status.vmPod).toMatchObject({ name: 'vm-web-0', uid });
    await apply(vmRestore('copy', { snapshotName: 'web-1', targetVMName: 'web-copy' }), ns);
    const copy = await waitForPhase('vmrestore/copy', ns, 'Failed');
    expect(copy.status.error.message).toMatch(/the recorded pod vm-web-0 has no container that mounts the vmsnap-run volume/);
    expect((await kubectl(['get', 'pod', 'web-copy', '-n', ns])).code).not.toBe(0);
    await apply(vmRestore('keep', { snapshotName: 'web-1' }), ns);
    expect((await waitForPhase('vmrestore/keep', ns, 'Failed')).status.error.message).toMatch(/set spec.ifRunning: Replace/);
    expect(await launcherStatus(pod)).toMatchObject({ state: 'running', generation: 1 });

    const offset = fs.readFileSync(serialPath, 'utf8').length;
    await apply(vmRestore('back', { snapshotName: 'web-1', ifRunning: 'Replace' }), ns);
    const restored = await waitForPhase('vmrestore/back', ns, 'Succeeded');
    expect(restored.status.downtimeMs).toBeGreaterThan(0);
    const after = await launcherStatus(pod);
    expect(after).toMatchObject({ ok: true, state: 'incoming', generation: 2 });
    // QEMU runs as the pod's user, not as the agent's root.
    if (canRunAsPodUser()) expect(fs.readFileSync(`/proc/${after.qemuPid}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${POD_UID}\\s`, 'm'));
    // The restored QEMU is the launcher's child, in the pod's cgroup: not the agent's.
    const ppid = /PPid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${after.qemuPid}/status`, 'utf8'))![1];
    expect(Number(ppid)).toBe(launcher.pid);
    expect(fs.readFileSync(`/proc/${after.qemuPid}/cgroup`, 'utf8')).toContain(`pod${uid}`);
    await expectVerifying(serialPath, { from: offset });
    await eventuallyInventory(ns, 'web', (v) => v.state === 'running');

    // restoreMode Lazy: the agent passes the snapshot fd to the launcher, whose new QEMU maps its RAM
    // from the file. The file is 0644 inside the agent's 0700 namespace directory, which the pod's user cannot enter.
    expect(fs.statSync(file).mode & 0o777).toBe(0o644);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    const lazyOffset = fs.readFileSync(serialPath, 'utf8').length;
    await apply(vmRestore('lazy', { snapshotName: 'web-1', restoreMode: 'Lazy', ifRunning: 'Replace' }), ns);
    const lazy = await waitForPhase('vmrestore/lazy', ns, 'Succeeded');
    expect(lazy.status).toMatchObject({ restoreMode: 'Lazy', lazy: { file: fs.realpathSync(file), mappedBytes: 128 << 20, vmRunning: true } });
    expect(lazy.status.restoreModeReason).toBeUndefined();
    const lazyQemu = await launcherStatus(pod);
    expect(lazyQemu).toMatchObject({ ok: true, state: 'incoming', generation: 3 });
    expect(procArgv(lazyQemu.qemuPid!)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^memory-backend-file,id=pc\.ram,size=134217728,mem-path=\/proc\/self\/fd\/3,offset=\d+,share=off,readonly=on,rom=off$/)]),
    );
    expect(fs.readFileSync(`/proc/${lazyQemu.qemuPid}/maps`, 'utf8')).toContain(fs.realpathSync(file));
    expect(Number(/PPid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${lazyQemu.qemuPid}/status`, 'utf8'))![1])).toBe(launcher.pid);
    await expectVerifying(serialPath, { from: lazyOffset });
    await eventuallyInventory(ns, 'web', (v) => v.state === 'running');
  });

  it('after an agent restart, a VM pod left paused mid-save is resumed and its VMSnapshot ends Failed', async () => {
    const pod = pods[0]!;
    const agentEnv = { VMSNAP_VM_SOURCE: 'pods', VMSNAP_KUBELET_ROOT_DIR: kubelet };
    await stack.killAgent('node-a', 'SIGKILL');
    await apply(vmSnapshot('crash', { vmName: 'web' }), ns);
    // The operator assigns it to the node (the agent is down, so nobody claims it).
    const snap = await poll(
      'the operator to assign VMSnapshot crash to the node',
      async () => {
        const s = await getJson('vmsnapshot/crash', ns);
        return s.status?.phase === 'Pending' && s.metadata.labels?.['vmsnap.io/node'] ? s : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    // What the agent that died had done: claimed it, written an incomplete header (for this VMSnapshot,
    // MACed with the node's key), and started the save in QEMU with the VM paused (slowed down here so
    // that it is still running on restart, even on a loaded machine: 128 MiB at 1 MiB/s).
    const file = snapshotFilePath(agent.storageRoot, snap as { metadata: { name: string; namespace: string; uid: string } });
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const fd = fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_WRONLY, 0o600);
    const client = await QmpClient.connect(path.join(pod.mount, 'qmp.sock'));
    try {
      const pid = client.peerCredentials().pid;
      const trust = headerTrust(agent.storageRoot, snap as { metadata: { name: string; namespace: string; uid: string } });
      writeHeader(fd, 'incomplete', {
        formatVersion: SNAPSHOT_FORMAT_VERSION,
        createdAt: new Date().toISOString(),
        snapshot: trust.snapshot,
        vm: { namespace: ns, name: 'web', qmpSocket: path.join(pod.runDir, 'qmp.sock') },
        qemu: { version: '10.0.0', machine: 'pc', pid, argv: [] },
        ram: { bytes: 128 << 20 },
        capture: { mode: 'Paused', wasRunning: true, after: 'resume' },
        stream: { offset: STREAM_OFFSET, channels: 1, directIO: false },
      }, trust.key);
      await kubectlOk([
        'patch', 'vmsnapshot', 'crash', '-n', ns, '--subresource=status', '--type=merge', '-p',
        JSON.stringify({ status: { phase: 'InProgress', nodeName: agent.nodeName, startTime: new Date().toISOString(), file: { path: file } } }),
      ]);
      await configureMigration(client, { channels: 1, directIO: false, unlimitedBandwidth: false });
      await client.execute('migrate-set-parameters', { 'max-bandwidth': 1 << 20 });
      const fdset = await addFdSet(client, [fd], 'vmsnap-save');
      await client.execute('stop');
      await client.execute('migrate', { uri: fileUri(fdset, STREAM_OFFSET) });
      expect((await client.execute<MigrationInfo>('query-migrate')).status).toMatch(/setup|active/);
    } finally {
      client.close();
      fs.closeSync(fd);
    }

    const offset = fs.readFileSync(path.join(pod.runDir, 'serial.log'), 'utf8').length;
    agent = await stack.startAgent('node-a', { env: agentEnv });
    const failed = await waitForPhase('vmsnapshot/crash', ns, 'Failed', 180_000);
    expect(failed.status.error.message).toMatch(
      /the agent restarted during the save; the save still running in QEMU was ended; the VM was resumed; the partial file was removed; create a new VMSnapshot to retry/,
    );
    expect(fs.existsSync(file)).toBe(false);
    expect((await qemuRunState(path.join(pod.mount, 'qmp.sock'))).status).toBe('running');
    expect(await qmpExecute(path.join(pod.mount, 'qmp.sock'), 'query-fdsets')).toEqual([]);
    await expectVerifying(path.join(pod.runDir, 'serial.log'), { from: offset });
  });

  it('refuses to save a VM pod whose writable disk is not on a volume the pod mounts read-write, saying what to do, and leaves it running', async () => {
    const uid = await podObject(ns, 'vm-db-0', 'db');
    const pod = runVolume(uid);
    const disk = path.join(pod.runDir, 'data.img');
    fs.writeFileSync(disk, Buffer.alloc(1 << 20));
    if (canRunAsPodUser()) fs.chownSync(disk, POD_UID, POD_UID);
    await vmPod(pod, 'db', ['-drive', `file=${path.join(pod.mount, 'data.img')},format=raw,if=virtio`]);
    await eventuallyInventory(ns, 'db', (v) => v.state === 'running');
    await apply(vmSnapshot('db-1', { vmName: 'db' }), ns);
    const snap = await waitForPhase('vmsnapshot/db-1', ns, 'Failed');
    // This pod object mounts no volume: its QEMU's disk is nowhere the agent lets a snapshot record.
    expect(snap.status.error.message).toMatch(/disk virtio0: its image \S*data\.img does not lie beneath a writable volume of the pod \(none\): keep writable disk images on a volume mounted read-write/);
    expect((await inventoryVm(ns, 'db'))?.state).toBe('running');
  });

  it('hibernates a VM pod (afterSnapshot: Stop ends QEMU, the launcher stays) and wakes it in place with its memory', async () => {
    const pod = pods[0]!;
    const launcher = launchers[0]!;
    const serialPath = path.join(pod.runDir, 'serial.log');
    const before = await launcherStatus(pod);
    expect(before).toMatchObject({ state: expect.stringMatching(/^(running|incoming)$/) });
    await eventuallyInventory(ns, 'web', (v) => v.state === 'running');

    await apply(vmSnapshot('hibernate', { vmName: 'web', afterSnapshot: 'Stop' }), ns);
    await waitForPhase('vmsnapshot/hibernate', ns, 'Succeeded');
    // QEMU quit after the save; the launcher (the pod) stays up with no QEMU.
    const stopped = await poll('the launcher to say stopped after the hibernate', async () => {
      const st = await launcherStatus(pod);
      return st.state === 'stopped' && st;
    });
    expect(stopped).toMatchObject({ generation: before.generation, lastExit: { code: 0, signal: null } });
    expect(stopped.qemuPid).toBeUndefined();
    expect(processAlive(before.qemuPid!)).toBe(false);
    expect(launcher.exitCode).toBeNull();
    const hibernated = await eventuallyInventory(ns, 'web', (v) => v.state !== 'running');
    expect(hibernated.state).toBe('stopped');

    const text = fs.readFileSync(serialPath, 'latin1');
    const offset = text.length;
    const lastPass = Math.max(...[...text.matchAll(/VMSNAP PASS n=(\d+) ok/g)].map((m) => Number(m[1])));
    // The default ifRunning (Fail) is enough: nothing runs.
    await apply(vmRestore('wake', { snapshotName: 'hibernate' }), ns);
    await waitForPhase('vmrestore/wake', ns, 'Succeeded');
    const woken = await launcherStatus(pod);
    expect(woken).toMatchObject({ ok: true, state: 'incoming', generation: before.generation + 1 });
    expect(fs.readFileSync(`/proc/${woken.qemuPid}/cgroup`, 'utf8')).toContain(`pod${pod.uid}`);
    await expectVerifying(serialPath, { from: offset });
    // The guest that was saved, not a fresh boot: no boot banner, its check counter goes on.
    const resumed = fs.readFileSync(serialPath, 'latin1').slice(offset);
    expect(resumed).not.toMatch(/VMSNAP (READY|INFO)/);
    expect(Math.min(...[...resumed.matchAll(/VMSNAP PASS n=(\d+) ok/g)].map((m) => Number(m[1])))).toBeGreaterThan(lastPass);
    await eventuallyInventory(ns, 'web', (v) => v.state === 'running');
  });

  it("refuses a VM pod whose QMP socket is a symlink to another pod's, and leaves the victim running", async () => {
    const victim = pods[0]!;
    const evilNs = await createNamespace('evil');
    try {
      const uid = await podObject(evilNs, 'vm-thief', 'thief');
      const evil = fakePod(kubelet, uid);
      pods.push(evil);
      fs.symlinkSync(path.join(victim.runDir, 'qmp.sock'), path.join(evil.runDir, 'qmp.sock'));
      const listed = await eventuallyInventory(evilNs, 'thief', (v) => v.state === 'unreachable');
      expect(listed.message).toMatch(/a symlink is in its path/);
      await apply(vmSnapshot('steal', { vmName: 'thief' }), evilNs);
      const snap = await waitForPhase('vmsnapshot/steal', evilNs, 'Failed');
      expect(snap.status.error.message).toMatch(/cannot reach the QMP of VM .*\/thief .*a symlink is in its path/);
      expect(fs.existsSync(path.join(agent.storageRoot, evilNs))).toBe(false);
      expect((await inventoryVm(ns, 'web'))?.state).toBe('running');
    } finally {
      await kubectl(['delete', 'namespace', evilNs, '--wait=false']);
    }
  });
});
