// VMSnapshot and VMRestore end to end: real API server, the chart's RBAC,
// the operator and two agents as processes, real QEMU guests.
import fs from 'node:fs';
import path from 'node:path';
import { QmpClient } from '../../agent/src/qmp/client.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { createNamespace, kubectl, kubectlOk, repoRoot } from '../../stack/controlplane.js';
import { startGuest, type Guest, expectVerifying } from '../../kit/guest.js';
import { flipBits } from '../engine/harness.js';
import { apply, getJson, waitFor, waitForPhase } from './objects.js';
import { startStack, tearDownStack, type Stack } from '../../stack/e2e.js';
import { vmSnapshot, vmRestore } from '../../kit/manifests.js';
import { qemuRunState } from '../../kit/qemu.js';
import { sleep } from '../../kit/poll.js';

let stack: Stack;
const guests: Guest[] = [];

const nodeName = (node: string) => stack.agents.get(node)!.nodeName;

beforeAll(async () => {
  stack = await startStack(['node-a', 'node-b']);
}, 30 * 60 * 1000);

afterAll(() => tearDownStack(stack, guests));

/** Boots a guest where node's agent discovers it: <vmRoot>/<namespace>/<name>/qmp.sock. */
async function vm(node: string, namespace: string, name: string, opts: { memMiB?: number; fillMiB?: number; monitor?: boolean } = {}): Promise<Guest> {
  const dir = path.join(stack.agents.get(node)!.vmRoot, namespace, name);
  const extraArgs = opts.monitor ? ['-qmp', `unix:${path.join(dir, 'test-monitor.sock')},server=on,wait=off`] : [];
  const g = await startGuest({ dir, name, memMiB: opts.memMiB ?? 256, fillMiB: opts.fillMiB ?? 64, seed: 5, extraArgs });
  guests.push(g);
  await g.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
  return g;
}

const qemuStatus = async (socket: string) => (await qemuRunState(socket)).status;

it('examples/vmsnapshot.yaml then examples/vmrestore.yaml: saved on the node, restored running and intact', async () => {
  // The examples live in namespace default: clear what an earlier run left.
  await kubectl(['delete', '-f', path.join(repoRoot, 'examples/vmrestore.yaml'), '--ignore-not-found', '--wait=true', '--timeout=60s']);
  await kubectl(['delete', '-f', path.join(repoRoot, 'examples/vmsnapshot.yaml'), '--ignore-not-found', '--wait=true', '--timeout=60s']);
  const guest = await vm('node-a', 'default', 'demo');
  await kubectlOk(['apply', '-f', path.join(repoRoot, 'examples/vmsnapshot.yaml')]);
  const snap = await waitForPhase('vmsnapshot/demo-snapshot', 'default', 'Succeeded');
  expect(snap.status).toMatchObject({ nodeName: nodeName('node-a'), readyToUse: true, restoreSize: 256 << 20, observedGeneration: 1 });
  expect(snap.status.conditions.map((c: { type: string; status: string }) => [c.type, c.status])).toEqual([['Ready', 'True'], ['Progressing', 'False'], ['Failed', 'False']]);
  expect(snap.status.durationMs).toBeGreaterThan(0);
  expect(snap.status.throughputMiBps).toBeGreaterThan(0);
  const file = snap.status.file.path as string;
  expect(file.startsWith(stack.agents.get('node-a')!.storageRoot + '/default/')).toBe(true);
  expect(readHeader(file).state).toBe('complete');
  // The printer columns answer "is it done, how big, how fast, where".
  const row = await kubectlOk(['get', 'vmss', 'demo-snapshot', '-n', 'default', '--no-headers']);
  expect(row).toMatch(new RegExp(`demo\\s+Succeeded\\s+true\\s+256Mi\\s+\\S+\\s+\\S+\\s+${nodeName('node-a')}`));
  // The operator labels it with its VM: the snapshots of one VM, by label and by field.
  expect(await kubectlOk(['get', 'vmss', '-n', 'default', '-l', 'vmsnap.io/vm=demo', '-o', 'name'])).toMatch(/^vmsnapshot\.vmsnap\.io\/demo-snapshot$/m);
  expect(await kubectlOk(['get', 'vmss', '-n', 'default', '-l', 'vmsnap.io/vm=nobody', '-o', 'name'])).toBe('');
  const describe = await kubectlOk(['describe', 'vmss', 'demo-snapshot', '-n', 'default']);
  expect(describe).toMatch(/Assigned/);
  expect(describe).toMatch(/SaveSucceeded/);

  const offset = guest.serialText().length;
  await kubectlOk(['apply', '-f', path.join(repoRoot, 'examples/vmrestore.yaml')]);
  const restore = await waitForPhase('vmrestore/demo-restore', 'default', 'Succeeded');
  expect(restore.status.nodeName).toBe(nodeName('node-a'));
  await guest.exited; // ifRunning: Replace stopped the running VM first
  await expectVerifying(guest.serialPath, { from: offset });
  expect(await qemuStatus(guest.qmpPath)).toBe('running');
});

it("uses the resource's channels and direct I/O, read back from QEMU during the save", async () => {
  const ns = await createNamespace('e2e-params');
  const guest = await vm('node-a', ns, 'tuned', { memMiB: 512, fillMiB: 384, monitor: true });
  // A second monitor lets the test watch QEMU while the agent holds the first.
  const monitor = await QmpClient.connect(path.join(path.dirname(guest.qmpPath), 'test-monitor.sock'));
  const seen: Array<{ channels: number; directIO: boolean }> = [];
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const m = await monitor.execute<{ status?: string }>('query-migrate');
      if (m.status === 'active' || m.status === 'device') {
        const p = await monitor.execute<Record<string, unknown>>('query-migrate-parameters');
        seen.push({ channels: p['multifd-channels'] as number, directIO: p['direct-io'] as boolean });
      }
      await sleep(2); // a sampler: it reads the parameters while the save runs
    }
  })();
  await apply(vmSnapshot('tuned', { vmName: 'tuned', parallelism: { channels: 3 }, directIO: 'Never' }), ns);
  const snap = await waitForPhase('vmsnapshot/tuned', ns, 'Succeeded');
  watching = false;
  await watcher;
  monitor.close();
  expect(seen.length).toBeGreaterThan(0);
  expect(seen[0]).toEqual({ channels: 3, directIO: false });
  expect(snap.status).toMatchObject({ effective: { channels: 3, directIO: 'Never' }, directIOUsed: false });
  expect(readHeader(snap.status.file.path).metadata.stream).toMatchObject({ channels: 3, directIO: false });
});

it('hibernate (afterSnapshot: Stop), restore, and restore a copy under a new name', async () => {
  const ns = await createNamespace('e2e-hib');
  const guest = await vm('node-a', ns, 'sleeper');
  await apply(vmSnapshot('nap', { vmName: 'sleeper', afterSnapshot: 'Stop', directIO: 'Always' }), ns);
  const snap = await waitForPhase('vmsnapshot/nap', ns, 'Succeeded');
  expect(snap.status.directIOUsed).toBe(true);
  await guest.exited;
  const offset = guest.serialText().length;

  // The file is now the VM's only state: deleting it (deletionPolicy Delete) is refused by the chart's policy.
  expect(snap.status.hibernated).toBe(true);
  const refusedDelete = await kubectl(['delete', 'vmsnapshot', 'nap', '-n', ns, '--wait=false']);
  expect(refusedDelete.code).not.toBe(0);
  expect(refusedDelete.stderr).toMatch(/vmsnap\.io\/allow-discard-hibernation.*holds the only state of VM sleeper/);
  expect((await getJson('vmsnapshot/nap', ns)).metadata.deletionTimestamp).toBeUndefined();

  // Woken from "the latest snapshot of sleeper": the operator chooses nap and says so.
  await apply(vmRestore('wake', { latestSnapshotOf: 'sleeper' }), ns);
  const woken = await waitForPhase('vmrestore/wake', ns, 'Succeeded');
  expect(woken.status).toMatchObject({ snapshotName: 'nap', effective: { snapshotName: 'nap', sourceVMName: 'sleeper' } });
  await expectVerifying(guest.serialPath, { from: offset });
  // The VM runs again: the snapshot no longer holds its only state (the operator saw it in the inventory).
  await waitFor('vmsnapshot/nap', ns, '{.status.hibernated}', (v) => v === 'false', 60_000);

  // The VM runs again: restoring over it needs ifRunning: Replace.
  await apply(vmRestore('again', { snapshotName: 'nap' }), ns);
  const refused = await waitForPhase('vmrestore/again', ns, 'Failed');
  expect(refused.status.error.message).toMatch(/spec\.ifRunning: Replace/);

  await apply(vmRestore('copy', { snapshotName: 'nap', targetVMName: 'sleeper-copy' }), ns);
  await waitForPhase('vmrestore/copy', ns, 'Succeeded');
  const copyDir = path.join(stack.agents.get('node-a')!.vmRoot, ns, 'sleeper-copy');
  expect(await qemuStatus(path.join(copyDir, 'qmp.sock'))).toBe('running');
  await expectVerifying(path.join(copyDir, 'serial.log'));
  expect(await qemuStatus(guest.qmpPath)).toBe('running'); // the original is untouched

  // A damaged file never costs a running VM: with ifRunning: Replace the file is checked before the VM is quit.
  const file: string = snap.status.file.path;
  flipBits(file, readHeader(file).streamOffset); // QEMU's stream magic: the header still reads fine
  await apply(vmRestore('over-damaged', { snapshotName: 'nap', ifRunning: 'Replace' }), ns);
  const damaged = await waitForPhase('vmrestore/over-damaged', ns, 'Failed');
  expect(damaged.status.error.message).toMatch(/missing QEVM magic/);
  expect(await qemuStatus(guest.qmpPath)).toBe('running');
});

it("routes each VM's work to its own node's agent", async () => {
  const ns = await createNamespace('e2e-nodes');
  await vm('node-b', ns, 'on-b');
  await apply(vmSnapshot('b-snap', { vmName: 'on-b' }), ns);
  const snap = await waitForPhase('vmsnapshot/b-snap', ns, 'Succeeded');
  expect(snap.status.nodeName).toBe(nodeName('node-b'));
  expect(snap.metadata.labels['vmsnap.io/node']).toBe(nodeName('node-b'));
  expect(snap.status.file.path.startsWith(stack.agents.get('node-b')!.storageRoot)).toBe(true);
});

it('a VMSnapshot in namespace A naming a VM of namespace B waits, then fails for good at its deadline: kubectl wait --for=condition=Failed returns', async () => {
  const nsA = await createNamespace('e2e-a');
  const nsB = await createNamespace('e2e-b');
  const victim = await vm('node-a', nsB, 'private');
  await apply(vmSnapshot('steal', { vmName: 'private', failureDeadline: '5s' }), nsA);
  // While it waits: Progressing, reason VMNotFound, and a Warning event.
  await waitFor('vmsnapshot/steal', nsA, '{.status.conditions[?(@.type=="Progressing")].reason}', (r) => r === 'VMNotFound' || r === 'DeadlineExceeded', 60_000);
  const waited = await kubectl(['wait', 'vmsnapshot/steal', '-n', nsA, '--for=condition=Failed', '--timeout=90s']);
  expect(waited.code).toBe(0);
  const snap = await getJson('vmsnapshot/steal', nsA);
  expect(snap.status.phase).toBe('Failed');
  const failed = snap.status.conditions.find((c: { type: string }) => c.type === 'Failed');
  expect(failed).toMatchObject({ status: 'True', reason: 'DeadlineExceeded', observedGeneration: 1 });
  expect(failed.message).toMatch(new RegExp(`spec.failureDeadline \\(5s\\); it was waiting: VM "private" not found in namespace "${nsA}"`));
  expect(snap.status.conditions.find((c: { type: string }) => c.type === 'Ready')).toMatchObject({ status: 'False' });
  const warnings = await kubectlOk(['get', 'events', '-n', nsA, '--field-selector', 'reason=VMNotFound,type=Warning', '-o', 'jsonpath={.items[*].message}']);
  expect(warnings).toMatch(/VM "private" not found/);
  expect(snap.status.nodeName).toBeUndefined();
  for (const node of ['node-a', 'node-b']) {
    expect(fs.existsSync(path.join(stack.agents.get(node)!.storageRoot, nsA))).toBe(false);
  }
  expect(await qemuStatus(victim.qmpPath)).toBe('running');
});

it('a VMSnapshot applied before its VM exists (GitOps) waits and succeeds once the VM appears', async () => {
  const ns = await createNamespace('e2e-early');
  await apply(vmSnapshot('early', { vmName: 'late-vm' }), ns);
  await waitFor('vmsnapshot/early', ns, '{.status.conditions[?(@.type=="Progressing")].reason}', (r) => r === 'VMNotFound', 60_000);
  const waiting = await getJson('vmsnapshot/early', ns);
  expect(waiting.status.phase).toBe('Pending');
  expect(waiting.status.conditions.find((c: { type: string }) => c.type === 'Progressing').message).toMatch(/retrying until spec.failureDeadline \(10m\)/);
  await vm('node-a', ns, 'late-vm');
  const snap = await waitForPhase('vmsnapshot/early', ns, 'Succeeded');
  expect(snap.status.nodeName).toBe(nodeName('node-a'));
  expect(snap.status.conditions.find((c: { type: string }) => c.type === 'Ready')).toMatchObject({ status: 'True', reason: 'Succeeded' });
});

it('deleting a snapshot removes its file (Delete) or keeps it (Retain)', async () => {
  const ns = await createNamespace('e2e-del');
  await vm('node-a', ns, 'keeper');
  await apply(vmSnapshot('gone', { vmName: 'keeper', deletionPolicy: 'Delete' }), ns);
  const gone = await waitForPhase('vmsnapshot/gone', ns, 'Succeeded');
  await apply(vmSnapshot('kept', { vmName: 'keeper', deletionPolicy: 'Retain' }), ns);
  const kept = await waitForPhase('vmsnapshot/kept', ns, 'Succeeded');
  expect(fs.existsSync(gone.status.file.path)).toBe(true);
  await kubectlOk(['delete', 'vmsnapshot', 'gone', 'kept', '-n', ns, '--wait=true', '--timeout=60s']);
  expect(fs.existsSync(gone.status.file.path)).toBe(false);
  expect(fs.existsSync(kept.status.file.path)).toBe(true);
});

it('the agent killed during a save: the VM ends up running and the snapshot finishes or fails, never stuck', async () => {
  const ns = await createNamespace('e2e-kill');
  const guest = await vm('node-a', ns, 'victim', { memMiB: 1024, fillMiB: 768 });
  await apply(vmSnapshot('interrupted', { vmName: 'victim', failureDeadline: '2m' }), ns);
  await waitFor('vmsnapshot/interrupted', ns, '{.status.phase}', (p) => p === 'InProgress', 60_000);
  await stack.killAgent('node-a', 'SIGKILL');
  await stack.startAgent('node-a');
  const final = await waitFor('vmsnapshot/interrupted', ns, '{.status.phase}', (p) => p === 'Succeeded' || p === 'Failed', 90_000);
  const snap = await getJson('vmsnapshot/interrupted', ns);
  if (final === 'Failed') expect(snap.status.error.message).toMatch(/\S/);
  else expect(readHeader(snap.status.file.path).state).toBe('complete');
  expect(await qemuStatus(guest.qmpPath)).toBe('running');
});

it('the operator leads through its Lease and counts finished work on /metrics', async () => {
  const lease = await getJson(`lease/vmsnap-operator`, stack.releaseNamespace);
  expect(lease.spec.holderIdentity).toMatch(/^operator-/);
  const log = fs.readFileSync(path.join(stack.workDir, 'operator.log'), 'utf8');
  const port = Number(/"port":(\d+),"msg":"serving \/metrics/.exec(log)?.[1]);
  expect(port).toBeGreaterThan(0);
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const succeeded = /vmsnap_operations_total\{kind="VMSnapshot",phase="Succeeded",node="[^"]+"\} (\d+)/.exec(text);
  expect(Number(succeeded?.[1])).toBeGreaterThan(0);
  expect(text).toMatch(/vmsnap_operation_duration_seconds_count\{kind="VMSnapshot"\} [1-9]/);
});

it("captureMode Live: status.capture says AutoConverge under TCG and QEMU's downtime, inside the pause reported; the VM runs on intact", async () => {
  const ns = await createNamespace('e2e-live');
  const dir = path.join(stack.agents.get('node-a')!.vmRoot, ns, 'busy');
  // The guest rewrites 64 MiB of its memory at 100 MiB/s (test/guest/init.c).
  const guest = await startGuest({ dir, name: 'busy', memMiB: 512, fillMiB: 128, seed: 9, kernelArgs: ['vmsnap.dirty_mib=64', 'vmsnap.dirty_mibps=100'] });
  guests.push(guest);
  await guest.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);

  await apply(vmSnapshot('busy-live', { vmName: 'busy', captureMode: 'Live' }), ns);
  const snap = await waitForPhase('vmsnapshot/busy-live', ns, 'Succeeded');
  expect(snap.status.capture).toMatchObject({ convergence: 'AutoConverge', downtimeLimitMs: 10, qemuDowntimeMs: expect.any(Number) });
  expect(snap.status.capture.reason).toMatch(/not KVM/);
  expect(snap.status.vmPausedMs).toBeGreaterThanOrEqual(snap.status.capture.qemuDowntimeMs);
  expect(readHeader(snap.status.file.path).metadata.capture).toMatchObject({ mode: 'Live', convergence: 'AutoConverge' });
  await expectVerifying(guest.serialPath, { after: guest.lastPass() });
});
