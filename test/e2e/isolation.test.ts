// Bad input and isolation end to end: names at the limits reach the disk only
// as safe file names under the agent's storage root; a VMRestore or
// VMSnapshot never reaches across namespaces; the agent listens on no
// network socket and the operator serves only read-only metrics and health.
import fs from 'node:fs';
import path from 'node:path';
import { createNamespace, kubectl } from '../../stack/controlplane.js';
import { startTinyVm, type QemuVm } from '../../kit/qemu.js';
import { apply, getJson, waitForPhase } from './objects.js';
import { startStack, tearDownStack, type Stack } from '../../stack/e2e.js';
import { isUnder } from '../../agent/src/daemon/paths.js';
import { digestsPath } from '../../agent/src/snapshot-file/digests.js';
import { firstPresentPage, flipBits } from '../engine/harness.js';
import { vmSnapshot, vmRestore, vmSnapshotClass } from '../../kit/manifests.js';
import { poll, sleep } from '../../kit/poll.js';

let stack: Stack;
const vms: QemuVm[] = [];
let nsA: string;
let nsB: string;

beforeAll(async () => {
  stack = await startStack(['iso-a']);
  nsA = await createNamespace('iso-a');
  nsB = await createNamespace('iso-b');
  vms.push(await startTinyVm(path.join(stack.agents.get('iso-a')!.vmRoot, nsA, 'private')));
  await waitForInventory('private');
}, 10 * 60 * 1000);

afterAll(async () => {
  await tearDownStack(stack, vms);
  for (const ns of [nsA, nsB]) if (ns) await kubectl(['delete', 'namespace', ns, '--wait=false']);
});

async function waitForInventory(vm: string): Promise<void> {
  await poll(`the agent to report VM ${vm}`, async () => {
    const r = await kubectl(['get', 'vminventory', stack.agents.get('iso-a')!.nodeName, '-o', 'jsonpath={.status.vms[*].name}']);
    return r.code === 0 && r.stdout.split(' ').includes(vm);
  }, { timeoutMs: 60_000, intervalMs: 300 });
}


it('the longest name the API server accepts (253 characters) becomes a safe file under the storage root', async () => {
  const name = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
  expect(name).toHaveLength(253);
  await apply(vmSnapshot(name, { vmName: 'private' }), nsA);
  const snap = await waitForPhase(`vmsnapshot/${name}`, nsA, 'Succeeded');
  const file: string = snap.status.file.path;
  const root = stack.agents.get('iso-a')!.storageRoot;
  expect(path.dirname(file)).toBe(path.join(root, nsA));
  expect(isUnder(root, fs.realpathSync(file))).toBe(true);
  expect(Buffer.byteLength(path.basename(file))).toBeLessThanOrEqual(255);
  expect(path.basename(file)).toMatch(/^[a-z0-9.-]+-[0-9a-f]{12}\.vms$/);
});

it('a VMRestore in namespace B naming a snapshot of namespace A finds nothing and touches nothing', async () => {
  await apply(vmSnapshot('a-snap', { vmName: 'private' }), nsA);
  await waitForPhase('vmsnapshot/a-snap', nsA, 'Succeeded');
  await apply(vmRestore('steal', { snapshotName: 'a-snap', targetVMName: 'private' }), nsB);
  // Give the operator time to act on it; it must only wait, never assign it to a node.
  await sleep(5000);
  const restore = await getJson('vmrestore/steal', nsB);
  expect(restore.status.phase).toBe('Pending');
  const ready = restore.status.conditions.find((c: { type: string }) => c.type === 'Ready');
  expect(ready).toMatchObject({ reason: 'SnapshotNotFound', message: `waiting for VMSnapshot "a-snap" (spec.snapshotName) to exist in namespace "${nsB}"` });
  expect(restore.status.nodeName).toBeUndefined();
  expect(restore.metadata.labels?.['vmsnap.io/node']).toBeUndefined();
  expect(vms[0]!.process.exitCode).toBeNull(); // the VM of namespace A was not replaced
  expect(fs.existsSync(path.join(stack.agents.get('iso-a')!.storageRoot, nsB))).toBe(false);
});

it('a VMSnapshot in namespace B naming a VM that exists only in namespace A waits for its own VM, fails at its deadline and writes nothing', async () => {
  await apply(vmSnapshot('steal', { vmName: 'private', failureDeadline: '5s' }), nsB);
  const snap = await waitForPhase('vmsnapshot/steal', nsB, 'Failed', 60_000);
  expect(snap.status.conditions.find((c: { type: string }) => c.type === 'Failed')).toMatchObject({ status: 'True', reason: 'DeadlineExceeded' });
  expect(snap.status.error.message).toMatch(new RegExp(`VM "private" not found in namespace "${nsB}"`));
  expect(snap.status.nodeName).toBeUndefined();
  expect(fs.existsSync(path.join(stack.agents.get('iso-a')!.storageRoot, nsB))).toBe(false);
});

it('verification mode through the API: spec.digests writes them, spec.verify refuses a damaged RAM page and names it', async () => {
  await apply(vmSnapshot('with-digests', { vmName: 'private', digests: 'Record' }), nsA);
  const snap = await waitForPhase('vmsnapshot/with-digests', nsA, 'Succeeded');
  const file: string = snap.status.file.path;
  expect(fs.existsSync(digestsPath(file))).toBe(true);
  expect(snap.status.digests).toEqual({ path: digestsPath(file), algorithm: 'sha256' });
  const { block, offset } = firstPresentPage(file);
  flipBits(file, offset + 7);
  await apply(vmRestore('verified', { snapshotName: 'with-digests', targetVMName: 'copy', verify: 'Digests' }), nsA);
  const restore = await waitForPhase('vmrestore/verified', nsA, 'Failed');
  expect(restore.status.error.message).toMatch(new RegExp(`is corrupted: RAM block ${block.id.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}, bytes 0\\.\\.\\d+ .*differ from the sha256 digest`));
  expect(fs.existsSync(path.join(stack.agents.get('iso-a')!.vmRoot, nsA, 'copy', 'qmp.sock'))).toBe(false); // QEMU never launched
  // Deleting the snapshot (deletionPolicy Delete by default) removes the digests with the file.
  await kubectl(['delete', 'vmrestore', 'verified', '-n', nsA, '--wait=true', '--timeout=60s']);
  expect((await kubectl(['delete', 'vmsnapshot', 'with-digests', '-n', nsA, '--wait=true', '--timeout=60s'])).code).toBe(0);
  expect(fs.existsSync(file)).toBe(false);
  expect(fs.existsSync(digestsPath(file))).toBe(false);
});

it('a VMSnapshotClass with digests: true (the boolean the enum replaced, still read as Record) turns the verification mode on for its snapshots; spec.digests: None wins', async () => {
  const className = `verified-${stack.release}`; // cluster-scoped: unique per run, and not a default class
  await apply(vmSnapshotClass(className, { digests: true as unknown as 'Record' }) /* the old boolean spelling, on purpose */);
  try {
    await apply(vmSnapshot('by-class', { vmName: 'private', className }), nsA);
    const snap = await waitForPhase('vmsnapshot/by-class', nsA, 'Succeeded');
    expect(snap.status.effective).toMatchObject({ className, digests: 'Record' });
    expect(snap.status.digests).toEqual({ path: digestsPath(snap.status.file.path), algorithm: 'sha256' });
    expect(fs.existsSync(digestsPath(snap.status.file.path))).toBe(true);
    await apply(vmSnapshot('class-but-off', { vmName: 'private', className, digests: 'None' }), nsA);
    const off = await waitForPhase('vmsnapshot/class-but-off', nsA, 'Succeeded');
    expect(off.status.effective.digests).toBe('None');
    expect(off.status.digests).toBeUndefined();
    expect(fs.existsSync(digestsPath(off.status.file.path))).toBe(false);
  } finally {
    await kubectl(['delete', 'vmsnapshotclass', className, '--ignore-not-found']);
  }
});

/** Inodes of the sockets a process has open. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    const m = /^socket:\[(\d+)\]$/.exec(safeReadlink(`/proc/${pid}/fd/${fd}`));
    if (m) inodes.add(m[1]!);
  }
  return inodes;
}

function safeReadlink(p: string): string {
  try {
    return fs.readlinkSync(p);
  } catch {
    return '';
  }
}

/** Listening TCP sockets (state 0A) of a process, as local ports. */
function listeningTcpPorts(pid: number): number[] {
  const mine = socketInodes(pid);
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const line of fs.readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[3] === '0A' && mine.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

/** Listening unix sockets (flag __SO_ACCEPTCON) of a process, as paths. */
function listeningUnixSockets(pid: number): string[] {
  const mine = socketInodes(pid);
  return fs
    .readFileSync(`/proc/${pid}/net/unix`, 'utf8')
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length >= 7 && (parseInt(f[3]!, 16) & 0x10000) !== 0 && mine.has(f[6]!))
    .map((f) => f[7] ?? '(unnamed)');
}

it('the agent listens on no TCP port and no unix socket (it only dials out)', () => {
  const pid = stack.agents.get('iso-a')!.process.pid!;
  expect(socketInodes(pid).size).toBeGreaterThan(0); // it does talk (to the API server): the check sees its sockets
  expect(listeningTcpPorts(pid)).toEqual([]);
  expect(listeningUnixSockets(pid)).toEqual([]);
});

it("the operator listens only on its metrics port, which serves metrics and health and nothing else", async () => {
  const pid = stack.operator.pid!;
  const ports = listeningTcpPorts(pid);
  expect(ports).toHaveLength(1);
  expect(listeningUnixSockets(pid)).toEqual([]);
  const base = `http://127.0.0.1:${ports[0]}`;
  expect((await fetch(`${base}/metrics`)).status).toBe(200);
  expect(await (await fetch(`${base}/healthz`)).text()).toBe('ok');
  for (const p of ['/', '/debug/pprof/', '/../../etc/passwd', '/metrics/../../etc/passwd', '/api/v1/secrets', '/%2e%2e/%2e%2e/etc/passwd']) {
    const r = await fetch(`${base}${p}`);
    expect([p, r.status]).toEqual([p, 404]);
  }
  // Other methods reach the same read-only handlers (there is nothing to write to); none fails.
  for (const method of ['POST', 'PUT', 'DELETE']) {
    const r = await fetch(`${base}/metrics`, { method, body: method === 'DELETE' ? undefined : 'vmsnap_operations_total 0' });
    expect(r.status).not.toBe(500);
  }
});
