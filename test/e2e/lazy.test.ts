// restoreMode: Lazy end to end: the operator and an agent as processes on the
// real API server, real QEMU guests. The VM and a copy run on RAM mapped from
// the snapshot file, status.lazy follows how much of it is resident, deleting
// the VMSnapshot under them is safe, and a VM whose RAM cannot be mapped is
// restored eagerly with the reason in its status.
import fs from 'node:fs';
import path from 'node:path';
import { createNamespace, kubectlOk } from '../../stack/controlplane.js';
import { startGuest, type Guest, expectVerifying } from '../../kit/guest.js';
import { apply, getJson, waitFor, waitForPhase } from './objects.js';
import { startStack, tearDownStack, type Stack } from '../../stack/e2e.js';
import { killQemusUnder, qemuPidsMentioning } from '../../kit/qemu.js';
import { vmSnapshot, vmRestore } from '../../kit/manifests.js';

let stack: Stack;
let ns: string;
const guests: Guest[] = [];

beforeAll(async () => {
  stack = await startStack(['node-a']);
  ns = await createNamespace('e2e-lazy');
}, 30 * 60 * 1000);

afterAll(() => tearDownStack(stack, guests));

const vmRoot = () => stack.agents.get('node-a')!.vmRoot;

async function hibernate(name: string, extra: { memoryBackendFile?: string } = {}): Promise<Guest> {
  const g = await startGuest({ dir: path.join(vmRoot(), ns, name), name, memMiB: 256, fillMiB: 64, seed: 9, ...extra });
  guests.push(g);
  await g.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
  await apply(vmSnapshot(`${name}-snap`, { vmName: name, afterSnapshot: 'Stop' }), ns);
  await waitForPhase(`vmsnapshot/${name}-snap`, ns, 'Succeeded');
  await g.exited;
  return g;
}

async function lazyRestore(name: string, snapshot: string, target?: string): Promise<Record<string, any>> {
  await apply(vmRestore(name, { snapshotName: snapshot, restoreMode: 'Lazy', ...(target ? { targetVMName: target } : {}) }), ns);
  return waitForPhase(`vmrestore/${name}`, ns, 'Succeeded');
}

function qemuPidOf(dir: string): number {
  const [pid] = qemuPidsMentioning(path.join(dir, 'qmp.sock'));
  if (pid === undefined) throw new Error(`no QEMU runs for ${dir}`);
  return pid;
}

it('restores a VM and a copy lazily; status.lazy follows residency; the snapshot can be deleted under them', async () => {
  const guest = await hibernate('app');
  const snap = await getJson(`vmsnapshot/app-snap`, ns);
  const file = snap.status.file.path as string;
  const offset = guest.serialText().length;

  const restore = await lazyRestore('app-lazy', 'app-snap');
  expect(restore.status).toMatchObject({
    restoreMode: 'Lazy',
    effective: { restoreMode: 'Lazy', prefetch: 'Background' },
    lazy: { file: fs.realpathSync(file), mappedBytes: 256 << 20, vmRunning: true },
  });
  expect(restore.status.restoreModeReason).toBeUndefined();
  await expectVerifying(guest.serialPath, { from: offset });
  // The agent measures residency as the guest pages its 64 MiB pattern in.
  await waitFor('vmrestore/app-lazy', ns, '{.status.lazy.residentBytes}', (v) => Number(v) >= 64 << 20, 60_000);
  const wide = await kubectlOk(['get', 'vmrestore', 'app-lazy', '-n', ns, '-o', 'wide', '--no-headers']);
  expect(wide).toMatch(/\bLazy\b/);

  const copyDir = path.join(vmRoot(), ns, 'app-copy');
  const copy = await lazyRestore('app-copy', 'app-snap', 'app-copy');
  expect(copy.status).toMatchObject({ restoreMode: 'Lazy', lazy: { vmRunning: true } });
  await expectVerifying(path.join(copyDir, 'serial.log'));

  // Deleting the snapshot removes its file; both VMs keep running on their mappings. (Once woken,
  // the hibernated VM no longer depends on the snapshot for its state: deleting it is allowed.)
  await waitFor('vmsnapshot/app-snap', ns, '{.status.hibernated}', (v) => v === 'false', 60_000);
  await kubectlOk(['delete', 'vmsnapshot', 'app-snap', '-n', ns, '--wait=true', '--timeout=60s']);
  expect(fs.existsSync(file)).toBe(false);
  const events = await kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'reason=FileDeleted', '-o', 'jsonpath={.items[*].message}']);
  expect(events).toMatch(/2 lazily restored VM\(s\) still run on it/);
  await expectVerifying(guest.serialPath, { from: guest.serialText().length });
  await expectVerifying(path.join(copyDir, 'serial.log'), { from: fs.readFileSync(path.join(copyDir, 'serial.log'), 'latin1').length });

  // Once the copy's QEMU is gone, its status says the file no longer backs it.
  process.kill(qemuPidOf(copyDir), 'SIGKILL');
  await waitFor('vmrestore/app-copy', ns, '{.status.lazy.vmRunning}', (v) => v === 'false', 30_000);
  killQemusUnder(path.join(vmRoot(), ns, 'app'));
});

it('falls back to Eager with the reason in status when the RAM cannot be mapped', async () => {
  const shm = path.join('/dev/shm', `vmsnap-e2e-lazy-${process.pid}.ram`);
  try {
    const guest = await hibernate('shared', { memoryBackendFile: shm });
    const offset = guest.serialText().length;
    const restore = await lazyRestore('shared-lazy', 'shared-snap');
    expect(restore.status.restoreMode).toBe('Eager');
    expect(restore.status.restoreModeReason).toMatch(/keeps its RAM in a file \(memory-backend-file/);
    expect(restore.status.lazy).toBeUndefined();
    // The Mode column shows what ran, not what was asked for.
    expect(await kubectlOk(['get', 'vmsr', 'shared-lazy', '-n', ns, '--no-headers'])).toMatch(/^shared-lazy\s+shared-snap\s+shared\s+Succeeded\s+Eager\s/);
    const events = await kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'reason=LazyFallback', '-o', 'jsonpath={.items[*].message}']);
    expect(events).toMatch(/restoreMode Lazy is not possible/);
    await expectVerifying(guest.serialPath, { from: offset });
  } finally {
    killQemusUnder(path.join(vmRoot(), ns, 'shared'));
    fs.rmSync(shm, { force: true });
  }
});
