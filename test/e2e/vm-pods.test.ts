// VM pods end to end without a kubelet: a real API server, the operator and an agent with
// vmSource 'pods' as processes, Pod objects bound to the agent's node, the kubelet's pod directory
// layout on the host, real cgroups named after the pod uids, and real QEMUs started by a stand-in
// launcher (test/e2e/fake-launcher.mjs) inside those cgroups. The agent must find the VM by its Pod,
// save and restore it through the checked sockets, never start QEMU itself, and refuse what a
// tenant plants or what VM pods do not support yet.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { snapshotFilePath } from '../../agent/src/daemon/paths.js';
import { addFdSet, configureMigration, fileUri, type MigrationInfo } from '../../agent/src/engine/migration.js';
import { QmpClient } from '../../agent/src/qmp/client.js';
import { SNAPSHOT_FORMAT_VERSION, STREAM_OFFSET, writeHeader } from '../../agent/src/snapshot-file/header.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { createNamespace, kubectl, kubectlOk, repoRoot } from '../cluster/controlplane.js';
import { ensureGuestAssets, guestArgs, startGuest, type Guest } from '../guest/guest.js';
import { fakePod, podCgroupsAvailable, PodCgroups, removeFakePod, type FakePod } from '../engine/pod-fixture.js';
import { apply, expectVerifying, getJson, killQemusUnder, startStack, waitForPhase, type AgentProcess, type Stack } from './stack.js';

const describeRoot = podCgroupsAvailable() ? describe : describe.skip;
const LAUNCHER = path.join(repoRoot, 'test/e2e/fake-launcher.mjs');

describeRoot('VM pods (vmSource: pods)', () => {
  let stack: Stack;
  let agent: AgentProcess;
  let kubelet: string;
  let ns: string;
  const cgroups = new PodCgroups();
  const pods: FakePod[] = [];
  const launchers: ChildProcess[] = [];
  const guests: Guest[] = [];

  beforeAll(async () => {
    stack = await startStack([]);
    kubelet = path.join(stack.workDir, 'kubelet');
    // What the chart must grant the agent for vmSource pods: reading Pods.
    await apply(`
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: ${stack.release}-agent-pods}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ${stack.release}-agent-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ${stack.release}-agent-pods}
subjects: [{kind: ServiceAccount, name: vmsnap-agent, namespace: ${stack.releaseNamespace}}]
`);
    agent = await stack.startAgent('node-a', { env: { VMSNAP_VM_SOURCE: 'pods', VMSNAP_KUBELET_ROOT_DIR: kubelet } });
    ns = await createNamespace('vmpods');
  }, 30 * 60 * 1000);

  afterAll(async () => {
    await Promise.all(guests.map((g) => g.kill('SIGKILL').catch(() => undefined)));
    for (const l of launchers) l.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1000));
    for (const p of pods) killQemusUnder(p.mount);
    for (const l of launchers) l.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    cgroups.remove();
    for (const p of pods) removeFakePod(p);
    if (ns) await kubectl(['delete', 'namespace', ns, '--wait=false']);
    await kubectl(['delete', 'clusterrole,clusterrolebinding', `${stack.release}-agent-pods`, '--ignore-not-found']);
    await stack?.stop();
    if (process.env.VMSNAP_KEEP_E2E) console.log(`logs kept in ${stack?.workDir}`);
    else if (stack) fs.rmSync(stack.workDir, { recursive: true, force: true });
  });

  /** A Pod object bound to the agent's node and marked Running (no kubelet runs here); returns its uid. */
  async function podObject(namespace: string, podName: string, vmName: string): Promise<string> {
    await apply(
      `
apiVersion: v1
kind: Pod
metadata: {name: ${podName}, labels: {vmsnap.io/vm: ${vmName}}}
spec:
  nodeName: ${agent.nodeName}
  containers: [{name: vm, image: vmsnap/vm:test}]
`,
      namespace,
    );
    await kubectlOk(['patch', 'pod', podName, '-n', namespace, '--subresource=status', '--type=merge', '-p', '{"status":{"phase":"Running"}}']);
    return (await kubectlOk(['get', 'pod', podName, '-n', namespace, '-o', 'jsonpath={.metadata.uid}'])).trim();
  }

  function launcherRequest(pod: FakePod, op: string): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path.join(pod.mount, 'launcher.sock'));
      let buf = '';
      s.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) {
          s.destroy();
          resolve(JSON.parse(buf.slice(0, buf.indexOf('\n'))));
        }
      });
      s.on('error', reject);
      s.write(JSON.stringify({ op }) + '\n');
    });
  }

  /** The VM pod's side: its run volume, the launcher in the pod's cgroup, QEMU started by it. */
  async function vmPod(uid: string): Promise<{ pod: FakePod; launcher: ChildProcess; serialPath: string }> {
    const pod = fakePod(kubelet, uid);
    pods.push(pod);
    const assets = await ensureGuestAssets();
    const argv = guestArgs(assets, { dir: pod.mount, name: 'web', memMiB: 128, fillMiB: 32, seed: 7 });
    const launcher = spawn(process.execPath, [LAUNCHER], {
      env: {
        ...process.env,
        QEMU_ARGV: JSON.stringify(argv),
        QMP_SOCKET: path.join(pod.mount, 'qmp.sock'),
        QEMU_LOG: path.join(pod.mount, 'qemu.log'),
        LAUNCHER_SOCKET: path.join(pod.mount, 'launcher.sock'),
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    launchers.push(launcher);
    await new Promise((r) => launcher.stdout!.once('data', r));
    cgroups.join(uid, launcher.pid!);
    expect(await launcherRequest(pod, 'start')).toMatchObject({ ok: true, state: 'running', generation: 1 });
    const serialPath = path.join(pod.runDir, 'serial.log');
    await expectVerifying(serialPath, 0);
    return { pod, launcher, serialPath };
  }

  async function inventoryVm(namespace: string, name: string): Promise<Record<string, any> | undefined> {
    const inv = JSON.parse(await kubectlOk(['get', 'vminventory', agent.nodeName, '-o', 'json']));
    return (inv.status?.vms ?? []).find((v: any) => v.namespace === namespace && v.name === name);
  }

  async function eventuallyInventory(namespace: string, name: string, accept: (vm: Record<string, any>) => boolean): Promise<Record<string, any>> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const vm = await inventoryVm(namespace, name).catch(() => undefined);
      if (vm && accept(vm)) return vm;
      if (Date.now() > deadline) throw new Error(`inventory of ${agent.nodeName} shows ${namespace}/${name} as ${JSON.stringify(vm)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  it('saves a VM pod and restores it in place through its launcher; the agent never starts QEMU', async () => {
    const uid = await podObject(ns, 'vm-web-0', 'web');
    const { pod, launcher, serialPath } = await vmPod(uid);
    const listed = await eventuallyInventory(ns, 'web', (v) => v.state === 'running');
    expect(listed.qmpSocket).toBe(path.join(kubelet, 'pods', uid, 'volumes/kubernetes.io~empty-dir/vmsnap-run/qmp.sock'));
    expect(listed.memoryBytes).toBe(128 << 20);

    await apply(`{apiVersion: vmsnap.io/v1alpha1, kind: VMSnapshot, metadata: {name: web-1}, spec: {vmName: web}}`, ns);
    const snap = await waitForPhase('vmsnapshot/web-1', ns, 'Succeeded');
    const file = snap.status.file.path as string;
    expect(readHeader(file).metadata.vm).toMatchObject({ namespace: ns, name: 'web' });

    // Refused for VM pods, with what to do instead.
    await apply(`{apiVersion: vmsnap.io/v1alpha1, kind: VMRestore, metadata: {name: copy}, spec: {snapshotName: web-1, targetVMName: web-copy}}`, ns);
    const copy = await waitForPhase('vmrestore/copy', ns, 'Failed');
    expect(copy.status.error.message).toMatch(/restoring a copy into another VM pod is not supported yet; restore into VM web itself \(omit spec.targetVMName\)/);
    await apply(`{apiVersion: vmsnap.io/v1alpha1, kind: VMRestore, metadata: {name: lazy}, spec: {snapshotName: web-1, restoreMode: Lazy, ifRunning: Replace}}`, ns);
    const lazy = await waitForPhase('vmrestore/lazy', ns, 'Failed');
    expect(lazy.status.error.message).toMatch(/restoreMode Lazy is not supported for VM pods yet: use restoreMode Eager/);
    await apply(`{apiVersion: vmsnap.io/v1alpha1, kind: VMRestore, metadata: {name: keep}, spec: {snapshotName: web-1}}`, ns);
    expect((await waitForPhase('vmrestore/keep', ns, 'Failed')).status.error.message).toMatch(/set spec.ifRunning: Replace/);
    expect(await launcherRequest(pod, 'status')).toMatchObject({ state: 'running', generation: 1 });

    const offset = fs.readFileSync(serialPath, 'utf8').length;
    await apply(`{apiVersion: vmsnap.io/v1alpha1, kind: VMRestore, metadata: {name: back}, spec: {snapshotName: web-1, ifRunning: Replace}}`, ns);
    const restored = await waitForPhase('vmrestore/back', ns, 'Succeeded');
    expect(restored.status.downtimeMs).toBeGreaterThan(0);
    const after = await launcherRequest(pod, 'status');
    expect(after).toMatchObject({ ok: true, state: 'incoming', generation: 2 });
    // The restored QEMU is the launcher's child, in the pod's cgroup: not the agent's.
    const ppid = /PPid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${after.qemuPid}/status`, 'utf8'))![1];
    expect(Number(ppid)).toBe(launcher.pid);
    expect(fs.readFileSync(`/proc/${after.qemuPid}/cgroup`, 'utf8')).toContain(`pod${uid}`);
    await expectVerifying(serialPath, offset);
    await eventuallyInventory(ns, 'web', (v) => v.state === 'running');
  });

  it('after an agent restart, a VM pod left paused mid-save is resumed and its VMSnapshot ends Failed', async () => {
    const pod = pods[0]!;
    const agentEnv = { VMSNAP_VM_SOURCE: 'pods', VMSNAP_KUBELET_ROOT_DIR: kubelet };
    await stack.killAgent('node-a', 'SIGKILL');
    await apply(`{apiVersion: vmsnap.io/v1alpha1, kind: VMSnapshot, metadata: {name: crash}, spec: {vmName: web}}`, ns);
    // The operator assigns it to the node (the agent is down, so nobody claims it).
    const deadline = Date.now() + 60_000;
    let snap = await getJson('vmsnapshot/crash', ns);
    while (snap.status?.phase !== 'Pending' || !snap.metadata.labels?.['vmsnap.io/node']) {
      if (Date.now() > deadline) throw new Error(`VMSnapshot crash was not assigned: ${JSON.stringify(snap.status)}`);
      await new Promise((r) => setTimeout(r, 250));
      snap = await getJson('vmsnapshot/crash', ns);
    }
    // What the agent that died had done: claimed it, written an incomplete header, and started the
    // save in QEMU with the VM paused (slowed down here so that it is still running on restart).
    const file = snapshotFilePath(agent.storageRoot, snap as { metadata: { name: string; namespace: string; uid: string } });
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const fd = fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_WRONLY, 0o600);
    const client = await QmpClient.connect(path.join(pod.mount, 'qmp.sock'));
    try {
      const pid = client.peerCredentials().pid;
      writeHeader(fd, 'incomplete', {
        formatVersion: SNAPSHOT_FORMAT_VERSION,
        createdAt: new Date().toISOString(),
        vm: { namespace: ns, name: 'web', qmpSocket: path.join(pod.runDir, 'qmp.sock') },
        qemu: { version: '10.0.0', machine: 'pc', pid, argv: [] },
        ram: { bytes: 128 << 20 },
        capture: { mode: 'Paused', wasRunning: true, after: 'resume' },
        stream: { offset: STREAM_OFFSET, channels: 1, directIO: false },
      });
      await kubectlOk([
        'patch', 'vmsnapshot', 'crash', '-n', ns, '--subresource=status', '--type=merge', '-p',
        JSON.stringify({ status: { phase: 'InProgress', nodeName: agent.nodeName, startTime: new Date().toISOString(), file: { path: file } } }),
      ]);
      await configureMigration(client, { channels: 1, directIO: false, unlimitedBandwidth: false });
      await client.execute('migrate-set-parameters', { 'max-bandwidth': 3 << 20 });
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
    const after = await QmpClient.connect(path.join(pod.mount, 'qmp.sock'));
    try {
      expect((await after.execute<{ status: string }>('query-status')).status).toBe('running');
      expect(await after.execute<Array<{ 'fdset-id': number }>>('query-fdsets')).toEqual([]);
    } finally {
      after.close();
    }
    await expectVerifying(path.join(pod.runDir, 'serial.log'), offset);
  });

  it('refuses to save a VM pod with a writable disk, saying what to do, and leaves it running', async () => {
    const uid = await podObject(ns, 'vm-db-0', 'db');
    const pod = fakePod(kubelet, uid);
    pods.push(pod);
    const disk = path.join(pod.runDir, 'data.img');
    fs.writeFileSync(disk, Buffer.alloc(1 << 20));
    const g = await startGuest({ dir: pod.mount, name: 'db', memMiB: 128, fillMiB: 16, extraArgs: ['-drive', `file=${disk},format=raw,if=virtio`] });
    guests.push(g);
    cgroups.join(uid, g.pid);
    await g.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
    await eventuallyInventory(ns, 'db', (v) => v.state === 'running');
    await apply(`{apiVersion: vmsnap.io/v1alpha1, kind: VMSnapshot, metadata: {name: db-1}, spec: {vmName: db}}`, ns);
    const snap = await waitForPhase('vmsnapshot/db-1', ns, 'Failed');
    expect(snap.status.error.message).toMatch(/VM .*\/db \(pod vm-db-0\) has writable disks \(virtio0\): saving VM pods with writable disks is not supported yet .*attach the disks read-only/);
    expect((await inventoryVm(ns, 'db'))?.state).toBe('running');
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
      await apply(`{apiVersion: vmsnap.io/v1alpha1, kind: VMSnapshot, metadata: {name: steal}, spec: {vmName: thief}}`, evilNs);
      const snap = await waitForPhase('vmsnapshot/steal', evilNs, 'Failed');
      expect(snap.status.error.message).toMatch(/cannot reach the QMP of VM .*\/thief .*a symlink is in its path/);
      expect(fs.existsSync(path.join(agent.storageRoot, evilNs))).toBe(false);
      expect((await inventoryVm(ns, 'web'))?.state).toBe('running');
    } finally {
      await kubectl(['delete', 'namespace', evilNs, '--wait=false']);
    }
  });
});
