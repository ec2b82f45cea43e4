// VMSnapshot and VMRestore of a VM with a disk, through the operator and an
// agent: restores see the disk as it was at the snapshot, a copy shares no
// writable state, and deleting snapshots merges layers only where nothing
// else is built on them.
import fs from 'node:fs';
import path from 'node:path';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { createNamespace, kubectlOk } from '../../stack/controlplane.js';
import { startGuest, type Guest } from '../../kit/guest.js';
import { Vm, ext4Image, inspectDisk } from '../guest/disk.js';
import { apply, waitFor, waitForPhase } from './objects.js';
import { startStack, tearDownStack, type Stack } from '../../stack/e2e.js';
import { vmSnapshot, vmRestore } from '../../kit/manifests.js';
import { poll } from '../../kit/poll.js';

let stack: Stack;
const guests: Guest[] = [];

beforeAll(async () => {
  stack = await startStack(['disk-node']);
}, 30 * 60 * 1000);

afterAll(() => tearDownStack(stack, guests));


async function eventsOf(ns: string, name: string): Promise<Array<{ reason: string; message: string }>> {
  const list = JSON.parse(await kubectlOk(['get', 'events', '-n', ns, '--field-selector', `involvedObject.name=${name}`, '-o', 'json'])) as {
    items: Array<{ reason: string; message: string }>;
  };
  return list.items;
}

async function waitForEvent(ns: string, name: string, reasons: string[]): Promise<{ reason: string; message: string }> {
  return poll(`a ${reasons.join('/')} event for ${name} in ${ns}`, async () => (await eventsOf(ns, name)).find((x) => reasons.includes(x.reason)), {
    timeoutMs: 90_000,
    intervalMs: 250,
  });
}

/** A guest with an ext4 disk where the agent finds it: <vmRoot>/<ns>/<name>/. */
async function diskVm(ns: string, name: string, seed: number): Promise<{ guest: Guest; vm: Vm; disk: string; vmRoot: string }> {
  const vmRoot = stack.agents.get('disk-node')!.vmRoot;
  const dir = path.join(vmRoot, ns, name);
  const disk = path.join(dir, 'disk.raw');
  await ext4Image(disk);
  const guest = await startGuest({ dir, name, memMiB: 256, fillMiB: 32, seed, disk: { path: disk, format: 'raw' } });
  guests.push(guest);
  await guest.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
  return { guest, vm: new Vm(dir), disk, vmRoot };
}

it('snapshot a VM with a disk, restore it in place and as a copy, then delete the snapshots', async () => {
  const ns = await createNamespace('e2e-disks');
  const { guest, vm, disk, vmRoot } = await diskVm(ns, 'dvm', 41);
  await vm.write('a1');

  await apply(vmSnapshot('before', { vmName: 'dvm', deletionPolicy: 'Delete' }), ns);
  const snap = await waitForPhase('vmsnapshot/before', ns, 'Succeeded');
  const [rec] = readHeader(snap.status.file.path).metadata.disks ?? [];
  expect(rec).toMatchObject({ base: disk, argvPath: disk });
  // The status says the same: which image holds the disk as of the snapshot, and where the VM went on writing.
  expect(snap.status.disks).toEqual([{ device: rec!.device, base: disk, baseFormat: rec!.baseFormat, virtualSize: rec!.virtualSize, overlay: rec!.overlay }]);
  expect(snap.status.disks[0].overlay).toMatch(/\.qcow2$/);
  await vm.write('b1'); // after the snapshot: no restore may see it

  await apply(vmRestore('copy', { snapshotName: 'before', targetVMName: 'dvm-copy' }), ns);
  await waitForPhase('vmrestore/copy', ns, 'Succeeded');
  const copy = new Vm(path.join(vmRoot, ns, 'dvm-copy'));
  await copy.memoryVerifies(0);
  expect(await copy.list()).toEqual(['a1:ok']);

  const from = vm.offset();
  await apply(vmRestore('back', { snapshotName: 'before', ifRunning: 'Replace' }), ns);
  await waitForPhase('vmrestore/back', ns, 'Succeeded');
  await guest.exited;
  // The replaced VM's layer (holding b1) was its discarded state: gone, so it pins nothing.
  expect(fs.existsSync(rec!.overlay!)).toBe(false);
  await vm.memoryVerifies(from);
  expect(await vm.list()).toEqual(['a1:ok']);
  await vm.write('x1');
  expect(await copy.list()).toEqual(['a1:ok']); // nothing shared
  expect(await vm.list()).toEqual(['a1:ok', 'x1:ok']);

  // A snapshot of the copy, deleted: nothing else is built on the copy's disk, so its layer is merged back.
  await apply(vmSnapshot('of-copy', { vmName: 'dvm-copy', deletionPolicy: 'Delete' }), ns);
  const copySnap = await waitForPhase('vmsnapshot/of-copy', ns, 'Succeeded');
  const [copyRec] = readHeader(copySnap.status.file.path).metadata.disks ?? [];
  expect(copyRec!.base.startsWith(path.join(vmRoot, ns, 'dvm-copy') + '/')).toBe(true);
  await copy.write('y1');
  await kubectlOk(['delete', 'vmsnapshot', 'of-copy', '-n', ns, '--wait=true', '--timeout=60s']);
  const merged = await waitForEvent(ns, 'of-copy', ['DiskLayersMerged', 'DiskLayersKept']);
  expect(merged).toMatchObject({ reason: 'DiskLayersMerged' });
  expect(fs.existsSync(copyRec!.overlay!)).toBe(false);
  expect(await copy.list()).toEqual(['a1:ok', 'y1:ok']);

  // The first snapshot, deleted: its base is what both restored VMs are built on, so it stays.
  await kubectlOk(['delete', 'vmsnapshot', 'before', '-n', ns, '--wait=true', '--timeout=60s']);
  const kept = await waitForEvent(ns, 'before', ['DiskLayersMerged', 'DiskLayersKept']);
  expect(kept.reason).toBe('DiskLayersKept');
  expect(fs.existsSync(disk)).toBe(true);
  await vm.umount();
  await copy.umount();
  const copyDir = path.join(vmRoot, ns, 'dvm-copy');
  const copyDisks = fs.readdirSync(copyDir).filter((f) => f.endsWith('.qcow2'));
  expect(copyDisks).toHaveLength(1); // the restore's overlay, with the merged layer in it
  expect(await inspectDisk(path.join(copyDir, copyDisks[0]!))).toMatchObject({ files: ['a1', 'y1'], clean: true });
});

it('hibernate a VM with a disk, wake it, delete the snapshot: the VM is back on its one disk image', async () => {
  const ns = await createNamespace('e2e-hib-disk');
  const { guest, vm, disk } = await diskVm(ns, 'sleeper', 42);
  await vm.write('a1');
  await apply(vmSnapshot('nap', { vmName: 'sleeper', afterSnapshot: 'Stop', deletionPolicy: 'Delete' }), ns);
  await waitForPhase('vmsnapshot/nap', ns, 'Succeeded');
  await guest.exited;
  const from = vm.offset();
  await apply(vmRestore('wake', { snapshotName: 'nap' }), ns);
  await waitForPhase('vmrestore/wake', ns, 'Succeeded');
  await vm.memoryVerifies(from);
  await vm.write('a2'); // onto the restore's overlay
  const layers = () => fs.readdirSync(path.dirname(disk)).filter((f) => f.endsWith('.qcow2'));
  expect(layers()).toHaveLength(1);

  // Woken: the snapshot no longer holds the VM's only state, so it may be deleted.
  await waitFor('vmsnapshot/nap', ns, '{.status.hibernated}', (v) => v === 'false', 60_000);
  await kubectlOk(['delete', 'vmsnapshot', 'nap', '-n', ns, '--wait=true', '--timeout=60s']);
  expect(await waitForEvent(ns, 'nap', ['DiskLayersMerged', 'DiskLayersKept'])).toMatchObject({ reason: 'DiskLayersMerged' });
  expect(layers()).toEqual([]);
  expect(await vm.list()).toEqual(['a1:ok', 'a2:ok']);
  await vm.umount();
  expect(await inspectDisk(disk)).toMatchObject({ files: ['a1', 'a2'], clean: true });
});
