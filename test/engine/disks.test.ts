// Disk-consistent snapshots with a real guest that has an ext4 disk: the guest
// writes files before a snapshot and others after; every restore must see
// exactly the files of the snapshot's instant, keep its memory pattern, leave a
// clean file system, and share no writable state with other restores.
import fs from 'node:fs';
import path from 'node:path';
import { saveVm } from '../../agent/src/engine/save.js';
import { restoreVm } from '../../agent/src/engine/restore.js';
import { layersOn, mergeIntoBase } from '../../agent/src/engine/disk-merge.js';
import { QmpClient } from '../../agent/src/qmp/client.js';
import { freezeDisks, writableDisks } from '../../agent/src/engine/disks.js';
import { addFdSet, configureMigration, fileUri, waitForMigration } from '../../agent/src/engine/migration.js';
import { queryVmInfo } from '../../agent/src/engine/qemu-info.js';
import { killAndWait } from '../../kit/qemu.js';
import { SNAPSHOT_FORMAT_VERSION, STREAM_OFFSET, writeHeader } from '../../agent/src/snapshot-file/header.js';
import type { SnapshotMetadata } from '../../agent/src/snapshot-file/metadata.js';
import { recoverSnapshot } from '../../agent/src/daemon/recovery.js';
import type { AgentContext } from '../../agent/src/daemon/context.js';
import type { VMSnapshot } from '../../api/index.js';
import { pino } from 'pino';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { formatInspect, inspectSnapshot } from '../../agent/src/cli/inspect.js';
import { type Guest } from '../../kit/guest.js';
import { Vm, ext4Image, inspectDisk } from '../guest/disk.js';
import { readyGuest, run, scratchDir, sha256File } from './harness.js';
import { OverlayLedger } from '../../agent/src/engine/overlay-ledger.js';
import { nodeHeaderKey } from '../../agent/src/engine/header-key.js';

let dir: string;
const guests: Guest[] = [];
const launchedPids: number[] = [];

beforeAll(() => {
  dir = scratchDir('disks');
});
afterAll(async () => {
  await Promise.all(guests.map((g) => g.kill().catch(() => undefined)));
  for (const pid of launchedPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Launches QEMU from the snapshot (a copy when `copyOf` = [source dir, copy dir]); ended after the tests. */
async function launchRestore(file: string, qmpSocket: string, copyOf?: [string, string]) {
  const rewrite = copyOf ? { paths: [copyOf], name: path.basename(copyOf[1]) } : undefined;
  const r = await restoreVm({ inPath: file, qmpSocket, directIO: 'auto', launch: true, relaunch: rewrite ? { rewrite } : undefined });
  launchedPids.push(r.launched!.pid);
  return r;
}

async function diskGuest(name: string, seed: number): Promise<{ guest: Guest; vm: Vm; disk: string }> {
  const gdir = path.join(dir, name);
  const disk = path.join(gdir, 'disk.raw');
  await ext4Image(disk);
  const guest = await readyGuest({ dir: gdir, name, memMiB: 256, fillMiB: 32, seed, disk: { path: disk, format: 'raw' } });
  guests.push(guest);
  expect(guest.serialText()).toContain('VMSNAP DISK MOUNTED');
  return { guest, vm: new Vm(gdir), disk };
}

it('one snapshot restores twice (in place and as a copy): each sees the files of its instant, memory intact, file system clean, nothing shared', async () => {
  const { guest, vm: src, disk } = await diskGuest('src', 31);
  await src.write('a1');
  await src.write('a2');

  const file = path.join(dir, 'src.vms');
  const saved = await saveVm({ qmpSocket: guest.qmpPath, outPath: file, channels: 2, directIO: 'auto', after: 'resume', live: false });
  expect(saved.disks).toHaveLength(1);
  const [rec] = saved.disks;
  expect(rec).toMatchObject({ argvPath: disk, base: disk, baseFormat: 'raw' });
  expect(rec!.overlay).toMatch(/disk\.raw\.vmsnap-[0-9a-z]+\.qcow2$/);
  expect(fs.existsSync(rec!.overlay!)).toBe(true);
  expect(readHeader(file).metadata.disks).toEqual(saved.disks);
  const baseHash = await sha256File(disk);

  // The source goes on, writing to its overlay and not to the frozen base.
  await src.write('b1');
  expect(await src.list()).toEqual(['a1:ok', 'a2:ok', 'b1:ok']);
  await src.umount();
  expect((await inspectDisk(rec!.overlay!)).files).toEqual(['a1', 'a2', 'b1']);
  await guest.kill();
  expect(await sha256File(disk)).toBe(baseHash);

  // Restore 1: the same VM, in its own directory.
  const from1 = src.offset();
  const r1 = await launchRestore(file, guest.qmpPath);
  // Restore 2: a copy under another name and directory, from the same snapshot.
  const copyDir = path.join(dir, 'copy');
  const copy = new Vm(copyDir);
  const r2 = await launchRestore(file, path.join(copyDir, 'qmp.sock'), [path.join(dir, 'src'), copyDir]);
  expect(r1.running && r2.running).toBe(true);

  await src.memoryVerifies(from1);
  await copy.memoryVerifies(0);
  // What the guest wrote before the snapshot is there, what it wrote after is not.
  expect(await src.list()).toEqual(['a1:ok', 'a2:ok']);
  expect(await copy.list()).toEqual(['a1:ok', 'a2:ok']);

  // Independent: writes in one do not show in the other.
  await src.write('x1');
  await copy.write('y1');
  expect(await src.list()).toEqual(['a1:ok', 'a2:ok', 'x1:ok']);
  expect(await copy.list()).toEqual(['a1:ok', 'a2:ok', 'y1:ok']);
  await src.memoryVerifies(src.offset());

  // Each runs on its own overlay of the base; after unmounting, fsck finds both clean.
  const overlays = fs.readdirSync(path.join(dir, 'src')).filter((f) => f.endsWith('.qcow2') && path.join(dir, 'src', f) !== rec!.overlay);
  const copyOverlays = fs.readdirSync(copyDir).filter((f) => f.endsWith('.qcow2'));
  expect(overlays).toHaveLength(1);
  expect(copyOverlays).toHaveLength(1);
  await src.umount();
  await copy.umount();
  const d1 = await inspectDisk(path.join(dir, 'src', overlays[0]!));
  const d2 = await inspectDisk(path.join(copyDir, copyOverlays[0]!));
  expect(d1).toMatchObject({ files: ['a1', 'a2', 'x1'], clean: true });
  expect(d2).toMatchObject({ files: ['a1', 'a2', 'y1'], clean: true });
  expect(await sha256File(disk)).toBe(baseHash);
});

it('live snapshot, then a hibernate of the same VM: each restores to its own instant', async () => {
  const { guest, vm, disk } = await diskGuest('hib', 32);
  await vm.write('h1');
  const live = path.join(dir, 'live.vms');
  const s1 = await saveVm({ qmpSocket: guest.qmpPath, outPath: live, channels: 2, directIO: 'auto', after: 'resume', live: true });
  expect(s1.disks[0]).toMatchObject({ base: disk, argvPath: disk });
  await vm.write('h2');

  // Hibernate: the VM ends; its current image (the live snapshot's overlay) is the base.
  const hib = path.join(dir, 'hib.vms');
  const s2 = await saveVm({ qmpSocket: guest.qmpPath, outPath: hib, channels: 2, directIO: 'auto', after: 'stop', live: false });
  expect(await guest.exited).toBe(0);
  expect(s2.disks[0]).toMatchObject({ base: s1.disks[0]!.overlay, argvPath: disk });
  expect(s2.disks[0]!.overlay).toBeUndefined();

  // Each restore in place: memory intact, and the files of its snapshot's instant.
  const restoreInPlace = async (file: string) => {
    const from = vm.offset();
    const r = await launchRestore(file, guest.qmpPath);
    await vm.memoryVerifies(from);
    const files = await vm.list();
    const end = async () => {
      await vm.umount();
      await killAndWait(r.launched!.pid);
    };
    return { files, end };
  };
  const first = await restoreInPlace(hib);
  expect(first.files).toEqual(['h1:ok', 'h2:ok']);
  await vm.write('h3'); // lands on the restore's overlay, not on either snapshot's base
  await first.end();
  const second = await restoreInPlace(live);
  expect(second.files).toEqual(['h1:ok']);
  await second.end();
  // The hibernated snapshot is still intact after both restores.
  expect((await restoreInPlace(hib)).files).toEqual(['h1:ok', 'h2:ok']);
});

it('inspect shows the frozen disk and a missing base; a restore refuses a missing base and a QEMU that would write onto it', async () => {
  const { guest, disk } = await diskGuest('attach', 33);
  const file = path.join(dir, 'attach.vms');
  await saveVm({ qmpSocket: guest.qmpPath, outPath: file, channels: 1, directIO: 'auto', after: 'stop', live: false });
  expect((await inspectSnapshot(file)).problems).toEqual([]);
  expect(formatInspect(await inspectSnapshot(file))).toContain(`${disk} frozen as ${disk} (raw`);
  fs.renameSync(disk, `${disk}.away`);
  expect((await inspectSnapshot(file)).problems).toEqual([`disk virtio0: its frozen base ${disk} is missing; this file cannot be restored`]);
  await expect(restoreVm({ inPath: file, qmpSocket: path.join(dir, 'attach-x', 'qmp.sock'), directIO: 'auto', launch: true })).rejects.toThrow(/frozen base .* is missing/);
  fs.renameSync(`${disk}.away`, disk);
  const target = await (await import('../../kit/guest.js')).startGuest({
    dir: path.join(dir, 'attach-dst'),
    name: 'attach',
    memMiB: 256,
    fillMiB: 32,
    seed: 33,
    incomingDefer: true,
    disk: { path: disk, format: 'raw' },
  });
  guests.push(target);
  await expect(restoreVm({ inPath: file, qmpSocket: target.qmpPath, directIO: 'auto' })).rejects.toThrow(/would write to .*disk\.raw, the snapshot's frozen disk base/);
});

it('the layer of a deleted snapshot is merged back into the base only once nothing else is built on it', async () => {
  const { guest, vm, disk } = await diskGuest('merge', 34);
  await vm.write('a1');
  const file = path.join(dir, 'merge.vms');
  const ledger = OverlayLedger.inMemory();
  const saved = await saveVm({ qmpSocket: guest.qmpPath, outPath: file, channels: 1, directIO: 'auto', after: 'resume', live: false, ledger });
  const rec = saved.disks[0]!;
  await vm.write('b1');

  // A copy restored from the snapshot runs on an overlay of the same base: the base is in use.
  const copyDir = path.join(dir, 'merge-copy');
  const r = await launchRestore(file, path.join(copyDir, 'qmp.sock'), [path.join(dir, 'merge'), copyDir]);
  const scan = () => layersOn(rec.base, [path.dirname(rec.base), copyDir], [rec.overlay!]);
  expect(scan()).toEqual([expect.stringMatching(new RegExp(`^${copyDir}/disk\\.raw\\.vmsnap-`))]);
  await killAndWait(r.launched!.pid); // gone, with its lock on the base
  fs.rmSync(copyDir, { recursive: true, force: true });
  expect(scan()).toEqual([]);

  // Merged: the running VM pivots onto its original image with everything it wrote, and goes on.
  const client = await QmpClient.connect(guest.qmpPath);
  try {
    await mergeIntoBase(client, { ...rec, top: rec.overlay! }, ledger);
  } finally {
    client.close();
  }
  expect(fs.existsSync(rec.overlay!)).toBe(false);
  const from = vm.offset();
  await vm.write('c1');
  expect(await vm.list()).toEqual(['a1:ok', 'b1:ok', 'c1:ok']);
  await vm.memoryVerifies(from);
  await vm.umount();
  expect(await inspectDisk(disk)).toMatchObject({ files: ['a1', 'b1', 'c1'], clean: true });
});

/**
 * What saveVm has done when its agent dies while QEMU holds the save before
 * switchover: header written, QEMU configured and migrating into our fdset.
 * `thenFreeze` goes on as far as the freeze, the header rewrite and the switchover.
 */
async function saveHeldBeforeSwitchover(qmpSocket: string, file: string, thenFreeze: boolean, key: Buffer): Promise<void> {
  const client = await QmpClient.connect(qmpSocket);
  try {
    const vm = await queryVmInfo(client);
    const meta: SnapshotMetadata = {
      formatVersion: SNAPSHOT_FORMAT_VERSION,
      createdAt: new Date().toISOString(),
      snapshot: { namespace: 'ns', name: 's', uid: 'u' },
      vm: { qmpSocket },
      qemu: { version: vm.version, machine: vm.machine, pid: vm.process.pid, argv: vm.process.argv, cwd: vm.process.cwd },
      ram: { bytes: vm.ramBytes, mainBlockId: vm.mainBlockId },
      capture: { mode: 'Paused', wasRunning: true, after: 'resume' },
      stream: { offset: STREAM_OFFSET, channels: 1, directIO: false },
    };
    const fd = fs.openSync(file, 'w');
    writeHeader(fd, 'incomplete', meta, key);
    await configureMigration(client, { channels: 1, directIO: false, unlimitedBandwidth: true, pauseBeforeSwitchover: true });
    const fdset = await addFdSet(client, [fd], 'vmsnap-save');
    await client.execute('stop');
    await client.execute('migrate', { uri: fileUri(fdset, STREAM_OFFSET) });
    const held = await waitForMigration(client, { pollMs: 20, startedAt: Date.now(), until: ['pre-switchover'] });
    expect(held.status).toBe('pre-switchover');
    if (thenFreeze) {
      meta.disks = await freezeDisks(client, writableDisks(await client.execute('query-block')), vm.process.argv, vm.process.cwd, OverlayLedger.inMemory());
      writeHeader(fd, 'incomplete', meta, key);
      await client.execute('migrate-continue', { state: 'pre-switchover' });
      expect((await waitForMigration(client, { pollMs: 20, startedAt: Date.now() })).status).toBe('completed');
    }
    fs.closeSync(fd);
  } finally {
    client.close(); // the agent is gone
  }
}

it('an agent that dies during the disk freeze: the next one never finishes a file without its disks, and the VM runs', async () => {
  const { guest, vm } = await diskGuest('crash', 35);
  await vm.write('a1');
  const ctx = { config: { storageRoot: dir }, log: pino({ level: 'silent' }) } as unknown as AgentContext;
  const snap = (file: string) =>
    ({ metadata: { name: 's', namespace: 'ns', uid: 'u' }, spec: { vmName: 'crash' }, status: { phase: 'InProgress', file: { path: file } } }) as unknown as VMSnapshot;
  const activeImage = async () => {
    const c = await QmpClient.connect(guest.qmpPath);
    try {
      return writableDisks(await c.execute('query-block'))[0]!.chain[0]!.filename;
    } finally {
      c.close();
    }
  };
  const disk = await activeImage();

  // Held before the freeze: the save is rolled back and the VM resumed on the disk it had.
  const held = path.join(dir, 'held.vms');
  await saveHeldBeforeSwitchover(guest.qmpPath, held, false, nodeHeaderKey(dir));
  const failed = await recoverSnapshot(ctx, snap(held));
  expect(failed.status).toMatchObject({ phase: 'Failed' });
  expect(fs.existsSync(held)).toBe(false);
  expect(await activeImage()).toBe(disk);
  let from = vm.offset();
  await vm.memoryVerifies(from);
  expect(await vm.list()).toEqual(['a1:ok']);

  // Died after the switchover: the file is finished with its frozen disk, and restores to that instant.
  const done = path.join(dir, 'done.vms');
  await saveHeldBeforeSwitchover(guest.qmpPath, done, true, nodeHeaderKey(dir));
  const ok = await recoverSnapshot(ctx, snap(done));
  expect(ok.status).toMatchObject({ phase: 'Succeeded' });
  const [rec] = readHeader(done).metadata.disks ?? [];
  expect(rec).toMatchObject({ base: disk });
  expect(await activeImage()).toBe(rec!.overlay);
  from = vm.offset();
  await vm.memoryVerifies(from);
  await vm.write('b1');
  await guest.kill();
  from = vm.offset();
  await launchRestore(done, guest.qmpPath);
  await vm.memoryVerifies(from);
  expect(await vm.list()).toEqual(['a1:ok']);
});

it('-blockdev and -drive disks are frozen in one transaction and restored onto overlays of their own; read-only ones are left alone', async () => {
  const gdir = path.join(dir, 'blockdev');
  const disk = path.join(gdir, 'disk.raw');
  const second = path.join(gdir, 'second.qcow2');
  const readonly = path.join(gdir, 'readonly.raw');
  await ext4Image(disk);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', second, '16M']);
  fs.writeFileSync(readonly, Buffer.alloc(1 << 20));
  const guest = await readyGuest({
    dir: gdir,
    name: 'blockdev',
    memMiB: 256,
    fillMiB: 32,
    seed: 36,
    extraArgs: [
      '-blockdev', `driver=file,filename=${disk},node-name=f0`,
      '-blockdev', 'driver=raw,file=f0,node-name=d0',
      '-device', 'virtio-blk-pci,drive=d0',
      '-drive', `file=${second},format=qcow2,if=virtio`,
      '-drive', `file=${readonly},format=raw,if=virtio,readonly=on`,
    ],
  });
  guests.push(guest);
  const file = path.join(dir, 'blockdev.vms');
  const saved = await saveVm({ qmpSocket: guest.qmpPath, outPath: file, channels: 1, directIO: 'auto', after: 'resume', live: false });
  const byBase = <T extends { base: string }>(xs: T[]) => [...xs].sort((a, b) => a.base.localeCompare(b.base));
  expect(byBase(saved.disks)).toEqual([
    expect.objectContaining({ argvPath: disk, base: disk, baseFormat: 'raw' }),
    expect.objectContaining({ argvPath: second, base: second, baseFormat: 'qcow2' }),
  ]);
  await guest.kill();
  const from = fs.statSync(guest.serialPath).size;
  const r = await launchRestore(file, guest.qmpPath);
  const client = await QmpClient.connect(guest.qmpPath);
  try {
    const restored = writableDisks(await client.execute('query-block')).sort((a, b) => a.chain[1]!.filename.localeCompare(b.chain[1]!.filename));
    expect(restored.map((d) => d.chain)).toEqual([
      [{ filename: expect.stringMatching(/disk\.raw\.vmsnap-[0-9a-z]+\.qcow2$/), format: 'qcow2' }, { filename: disk, format: 'raw' }],
      [{ filename: expect.stringMatching(/second\.qcow2\.vmsnap-[0-9a-z]+\.qcow2$/), format: 'qcow2' }, { filename: second, format: 'qcow2' }],
    ]);
    expect(restored[0]!.chain[0]!.filename).not.toBe(byBase(saved.disks)[0]!.overlay);
    const all = await client.execute<Array<{ inserted?: { image: { filename: string } } }>>('query-block');
    expect(all.some((b) => b.inserted?.image.filename === readonly)).toBe(true); // read-only: as it was
  } finally {
    client.close();
  }
  expect(r.running).toBe(true);
  await new Vm(gdir).memoryVerifies(from);
});
