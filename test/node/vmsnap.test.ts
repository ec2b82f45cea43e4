// vmsnap as users deploy it, on a real node: the chart's operator and agent run as pods from the
// image built here, the VM is a pod whose launcher owns QEMU, and saves and restores go through
// the VMSnapshot and VMRestore resources. The agent and operator pods are deleted and upgraded
// under the VM: its QEMU keeps its pid and its guest keeps verifying its memory.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import type { VMRestoreSpecInput, VMSnapshotSpecInput } from '../../api/index.js';
import {
  buildAndLoadImages,
  describeRelease,
  ensureNamespace,
  installRelease,
  uninstallRelease,
  upgradeRelease,
  type Release,
} from '../../stack/product.js';
import { ensureNodeCluster, nodeKubectl, nodeKubectlOk, type NodeCluster } from '../../stack/node-cluster.js';
import { capabilityNames, processStatus } from './proc.js';
import { createVmPod, processesOfPod, qemuPidsOfPod, vmLog } from '../../stack/vm-pod.js';
import { guestChecks } from '../../kit/guest.js';
import { AGENT_CAPABILITIES } from '../../api/chart-values.js';
import { finished as finishedAsAdmin, getAsAdmin as getJson, until } from './phase.js';
import { vmRestore, vmSnapshot } from '../../kit/manifests.js';

const suffix = randomBytes(3).toString('hex');
const vmNamespace = `vms-${suffix}`;
const VM = 'demo';
let cp: NodeCluster;
let release: Release;
let podUid: string;



/** Waits for a terminal phase and returns the object; `expected` fails the test on the other one. */
const finished = (resource: string, expected?: 'Succeeded' | 'Failed', timeoutMs?: number) =>
  finishedAsAdmin(resource, vmNamespace, { expected, timeoutMs, context: () => describeRelease(release.namespace) });

/** The guest runs on with its memory intact: two more passing checks than `before`, no BAD line. */
async function expectGuestVerifying(before: number): Promise<void> {
  await until('the guest to pass two more memory checks', async () => {
    const checks = guestChecks(await vmLog(vmNamespace, VM));
    if (checks.bad.length > 0) throw new Error(`guest memory damaged: ${checks.bad[0]}`);
    return checks.passCount >= before + 2 ? true : undefined;
  }, 90_000);
}

const passCount = async () => guestChecks(await vmLog(vmNamespace, VM)).passCount;

function onlyQemu(): number {
  const pids = qemuPidsOfPod(podUid);
  if (pids.length !== 1) throw new Error(`expected one QEMU in pod ${VM}, found ${JSON.stringify(pids)}`);
  return pids[0]!;
}

async function agentPod(): Promise<{ name: string; uid: string }> {
  const pods = JSON.parse(await nodeKubectlOk(['get', 'pods', '-n', release.namespace, '-l', 'app.kubernetes.io/component=agent', '-o', 'json'])).items as any[];
  const live = pods.filter((p) => !p.metadata.deletionTimestamp);
  if (live.length !== 1) throw new Error(`expected one agent pod, found ${live.length}`);
  return { name: live[0].metadata.name, uid: live[0].metadata.uid };
}

async function waitAgentReplaced(oldUid: string): Promise<void> {
  await until('a new agent pod to be Ready', async () => {
    const r = await nodeKubectl(['get', 'pods', '-n', release.namespace, '-l', 'app.kubernetes.io/component=agent', '-o', 'json']);
    if (r.code !== 0) return undefined;
    const pods = (JSON.parse(r.stdout).items as any[]).filter((p) => !p.metadata.deletionTimestamp && p.metadata.uid !== oldUid);
    return pods.some((p) => p.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True')) ? true : undefined;
  }, 180_000);
}

function snapshot(name: string, extra: Partial<VMSnapshotSpecInput> = {}) {
  return JSON.stringify(vmSnapshot({ name, namespace: vmNamespace }, { vmName: VM, ...extra }));
}

function restore(name: string, snapshotName: string, extra: Partial<VMRestoreSpecInput> = { ifRunning: 'Replace' }) {
  return JSON.stringify(vmRestore({ name, namespace: vmNamespace }, { snapshotName, ...extra }));
}

/** A pod's guest runs and verifies its memory: two passing checks from `before` on, no BAD line. */
async function expectPodGuestVerifying(pod: string, before = 0): Promise<void> {
  await until(`the guest of pod ${pod} to pass two more memory checks`, async () => {
    const r = await nodeKubectl(['logs', pod, '-n', vmNamespace, '-c', 'vm']);
    if (r.code !== 0) return undefined;
    const checks = guestChecks(r.stdout);
    if (checks.bad.length > 0) throw new Error(`guest memory of pod ${pod} damaged: ${checks.bad[0]}`);
    return checks.passCount >= before + 2 ? true : undefined;
  }, 120_000);
}

beforeAll(async () => {
  cp = await ensureNodeCluster();
  const images = await buildAndLoadImages(cp);
  const base = 20000 + Math.floor(Math.random() * 20000);
  release = await installRelease(cp, images, {
    namespace: `vmsnap-${suffix}`,
    storageRoot: path.join(process.env.VMSNAP_TEST_DIR ?? os.tmpdir(), `vmsnap-node-${suffix}`, 'snapshots'),
    ports: { metrics: base, operatorProbes: base + 1, agentProbes: base + 2 },
  });
  await ensureNamespace(vmNamespace, 'restricted');
  podUid = await createVmPod({ namespace: vmNamespace, name: VM, image: images.guest, memMiB: 256, fillMiB: 96, seed: 7 });
  await expectGuestVerifying(0);
  await until('the agent to report the VM pod in its inventory', async () => {
    const inv = await nodeKubectl(['get', 'vminventory', cp.nodeName, '-o', 'json']);
    if (inv.code !== 0) return undefined;
    const vms = (JSON.parse(inv.stdout).status?.vms ?? []) as any[];
    return vms.some((v) => v.namespace === vmNamespace && v.name === VM && v.state === 'running') ? true : undefined;
  });
}, 60 * 60 * 1000);

afterAll(async () => {
  if (!cp) return;
  if (release) {
    // While the agent still runs: it removes the snapshot files and then the finalizers (hibernations included: annotated).
    await nodeKubectl(['annotate', 'vmsnapshots', '--all', '-n', vmNamespace, '--overwrite', 'vmsnap.io/allow-discard-hibernation=true']);
    await nodeKubectl(['delete', 'vmrestores,vmsnapshots', '--all', '-n', vmNamespace, '--wait=true', '--timeout=120s']);
  }
  await nodeKubectl(['delete', 'namespace', vmNamespace, '--wait=false']);
  if (release) {
    await uninstallRelease(cp, release);
    await nodeKubectl(['delete', 'namespace', release.namespace, '--wait=false']);
  }
}, 300_000);

test('the chart runs the operator and the agent as Ready pods from the image built here', async () => {
  const pods = JSON.parse(await nodeKubectlOk(['get', 'pods', '-n', release.namespace, '-o', 'json'])).items as any[];
  const components = pods.map((p) => p.metadata.labels['app.kubernetes.io/component']).sort();
  expect(components).toEqual(['agent', 'operator']);
  for (const p of pods) {
    expect(p.spec.containers[0].image).toMatch(/^localhost\/vmsnap\/vmsnap:/);
    expect(p.status.conditions.find((c: any) => c.type === 'Ready')?.status).toBe('True');
    expect(p.spec.containers[0].readinessProbe).toBeDefined();
  }
  expect(pods.find((p) => p.metadata.labels['app.kubernetes.io/component'] === 'agent').spec.serviceAccountName).toMatch(/agent/);
});

test('the agent container is not privileged: its process holds exactly the named capabilities, under seccomp, with no_new_privs', async () => {
  const agent = await agentPod();
  const spec = JSON.parse(await nodeKubectlOk(['get', 'pod', agent.name, '-n', release.namespace, '-o', 'json'])).spec;
  expect(spec.containers[0].securityContext.privileged).toBe(false);
  // Read on the host, from the agent's own process (tini's child), not from what the spec asks.
  const pids = processesOfPod(agent.uid, /dist\/agent\/src\/cli\/main\.js/);
  expect(pids).toHaveLength(1);
  const status = processStatus(pids[0]!);
  expect(capabilityNames(status.CapEff!)).toEqual([...AGENT_CAPABILITIES].sort());
  expect(capabilityNames(status.CapPrm!)).toEqual([...AGENT_CAPABILITIES].sort());
  expect(capabilityNames(status.CapBnd!)).toEqual([...AGENT_CAPABILITIES].sort());
  expect(status.Seccomp).toBe('2');
  expect(status.NoNewPrivs).toBe('1');
  expect(status.Uid!.split(/\s+/)[1]).toBe('0');
});

test('a VMSnapshot and a VMRestore of a VM pod: the pod keeps running, QEMU is restarted inside it, guest memory intact', async () => {
  const before = onlyQemu();
  await nodeKubectlOk(['apply', '-f', '-'], { input: snapshot('snap-1') });
  const snap = await finished('vmsnapshot/snap-1', 'Succeeded');
  expect(snap.status.restoreSize).toBeGreaterThan(0);
  expect(onlyQemu()).toBe(before);

  const passes = await passCount();
  await nodeKubectlOk(['apply', '-f', '-'], { input: restore('restore-1', 'snap-1') });
  await finished('vmrestore/restore-1', 'Succeeded');
  const after = onlyQemu();
  expect(after).not.toBe(before);
  expect((await getJson(`pod/${VM}`, vmNamespace)).metadata.uid).toBe(podUid);
  await expectGuestVerifying(passes);
});

test('deleting the agent pod while idle leaves the VM running; the new agent pod takes over', async () => {
  const qemu = onlyQemu();
  const old = await agentPod();
  const passes = await passCount();
  await nodeKubectlOk(['delete', 'pod', old.name, '-n', release.namespace, '--wait=false']);
  await waitAgentReplaced(old.uid);
  expect(onlyQemu()).toBe(qemu);
  await expectGuestVerifying(passes);
  // The new agent works: a save succeeds.
  await nodeKubectlOk(['apply', '-f', '-'], { input: snapshot('snap-after-idle-restart') });
  await finished('vmsnapshot/snap-after-idle-restart', 'Succeeded');
  expect(onlyQemu()).toBe(qemu);
});

test('deleting the agent pod while a save runs: the save ends, never stuck, and the VM keeps running', async () => {
  const qemu = onlyQemu();
  const old = await agentPod();
  // One channel and no direct I/O keep the save long enough to be interrupted.
  await nodeKubectlOk(['apply', '-f', '-'], { input: snapshot('snap-interrupted', { parallelism: { channels: 1 }, directIO: 'Never' }) });
  await until('the save to be InProgress', async () => ((await getJson('vmsnapshot/snap-interrupted', vmNamespace)).status?.phase === 'InProgress' ? true : undefined), 60_000);
  await nodeKubectlOk(['delete', 'pod', old.name, '-n', release.namespace, '--wait=false']);
  const end = await finished('vmsnapshot/snap-interrupted', undefined, 300_000);
  expect(['Succeeded', 'Failed']).toContain(end.status.phase);
  await waitAgentReplaced(old.uid);
  expect(onlyQemu()).toBe(qemu);
  await expectGuestVerifying(await passCount());
});

test('helm upgrade with a changed agent setting rolls the DaemonSet and no VM dies', async () => {
  const qemu = onlyQemu();
  const old = await agentPod();
  const passes = await passCount();
  await upgradeRelease(cp, release, { 'agent.maxConcurrentOperations': '3' });
  await waitAgentReplaced(old.uid);
  expect((await agentPod()).uid).not.toBe(old.uid);
  expect(onlyQemu()).toBe(qemu);
  await expectGuestVerifying(passes);
});

test('the operator pod deleted during a restore: the restore still ends', async () => {
  await nodeKubectlOk(['apply', '-f', '-'], { input: restore('restore-2', 'snap-1') });
  const operator = JSON.parse(await nodeKubectlOk(['get', 'pods', '-n', release.namespace, '-l', 'app.kubernetes.io/component=operator', '-o', 'json'])).items[0];
  await nodeKubectlOk(['delete', 'pod', operator.metadata.name, '-n', release.namespace, '--wait=false']);
  await finished('vmrestore/restore-2', 'Succeeded', 300_000);
  await expectGuestVerifying(await passCount());
});

const COPY = 'demo-copy';

test('a copy (spec.targetVMName) runs in a new pod made from the recorded pod; its guest verifies its memory and the source runs on', async () => {
  const source = onlyQemu();
  await nodeKubectlOk(['apply', '-f', '-'], { input: snapshot('snap-for-copy') });
  const snap = await finished('vmsnapshot/snap-for-copy', 'Succeeded');
  expect(snap.status.vmPod).toMatchObject({ name: VM, uid: podUid });
  expect(snap.status.vmPod.spec.nodeName).toBeUndefined();

  await nodeKubectlOk(['apply', '-f', '-'], { input: restore('restore-copy', 'snap-for-copy', { targetVMName: COPY }) });
  const done = await finished('vmrestore/restore-copy', 'Succeeded');
  const pod = await getJson(`pod/${COPY}`, vmNamespace);
  expect(done.status.pod).toEqual({ name: COPY, uid: pod.metadata.uid });
  expect(pod.metadata.labels).toMatchObject({ 'vmsnap.io/vm': COPY, 'vmsnap.io/restore-pod': 'true' });
  expect(pod.metadata.annotations).toMatchObject({ 'vmsnap.io/restore': 'restore-copy', 'vmsnap.io/snapshot': 'snap-for-copy' });
  expect(pod.spec.nodeName).toBe(cp.nodeName);
  // The copy's QEMU is the new pod's, under the pod's user; the source's QEMU never moved.
  expect(qemuPidsOfPod(pod.metadata.uid)).toHaveLength(1);
  await expectPodGuestVerifying(COPY);
  expect(onlyQemu()).toBe(source);
  await expectGuestVerifying(await passCount());
  // Succeeded: the pod is the user's now, no longer owned by the VMRestore.
  await until('the copy pod to lose its owner reference', async () => (((await getJson(`pod/${COPY}`, vmNamespace)).metadata.ownerReferences ?? []).length === 0 ? true : undefined), 30_000);

  // The name is now taken: a second copy onto it fails, naming the field, and makes no pod.
  await nodeKubectlOk(['apply', '-f', '-'], { input: restore('restore-copy-again', 'snap-for-copy', { targetVMName: COPY }) });
  const again = await finished('vmrestore/restore-copy-again', 'Failed');
  expect(again.status.error.message).toMatch(/spec.targetVMName "demo-copy" is taken/);
  expect((await getJson(`pod/${COPY}`, vmNamespace)).metadata.uid).toBe(pod.metadata.uid);
});

test('hibernate (afterSnapshot Stop), delete the pod, and a Lazy VMRestore wakes the VM in a new pod with its memory intact', async () => {
  const before = (await getJson(`pod/${COPY}`, vmNamespace)).metadata.uid;
  await expectPodGuestVerifying(COPY);
  await nodeKubectlOk(['apply', '-f', '-'], { input: snapshot('snap-hibernate', { vmName: COPY, afterSnapshot: 'Stop' }) });
  await finished('vmsnapshot/snap-hibernate', 'Succeeded');
  await until('the hibernated QEMU to end', async () => (qemuPidsOfPod(before).length === 0 ? true : undefined), 60_000);
  await nodeKubectlOk(['delete', 'pod', COPY, '-n', vmNamespace, '--wait=true', '--timeout=120s']);

  await nodeKubectlOk(['apply', '-f', '-'], { input: restore('restore-wake', 'snap-hibernate', { restoreMode: 'Lazy' }) });
  const woken = await finished('vmrestore/restore-wake', 'Succeeded');
  expect(woken.status.restoreMode).toBe('Lazy');
  const pod = await getJson(`pod/${COPY}`, vmNamespace);
  expect(pod.metadata.uid).not.toBe(before);
  expect(woken.status.pod).toEqual({ name: COPY, uid: pod.metadata.uid });
  expect(qemuPidsOfPod(pod.metadata.uid)).toHaveLength(1);
  await expectPodGuestVerifying(COPY);
  await nodeKubectlOk(['delete', 'pod', COPY, '-n', vmNamespace, '--wait=false']);
});
