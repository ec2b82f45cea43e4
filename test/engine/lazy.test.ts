// Lazy restore with real TCG guests: the main RAM block is mapped from the
// snapshot file (private, copy-on-write) and QEMU loads only the rest. The
// guest filled its memory with a pattern before the save and must go on
// verifying all of it; copies restored from one file share its pages but not
// their writes; the file never changes, may be deleted under running VMs, and
// a lazily restored VM saves and restores like any other.
import fs from 'node:fs';
import path from 'node:path';
import { restoreVm, type RestoreResult } from '../../agent/src/engine/restore.js';
import { lazyResidency } from '../../agent/src/engine/lazy/residency.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { QmpClient } from '../../agent/src/qmp/client.js';
import { cli, readyGuest, run, scratchDir, sha256File } from './harness.js';
import { expectVerifying, type Guest } from '../../kit/guest.js';
import { procArgv, pidsWhere } from '../../kit/qemu.js';
import { poll, sleep } from '../../kit/poll.js';

const guests: Guest[] = [];
const launchedPids: number[] = [];
let dir: string;

beforeAll(() => {
  dir = scratchDir('lazy');
});
afterAll(async () => {
  for (const pid of launchedPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await Promise.all(guests.map((g) => g.kill().catch(() => undefined)));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function hibernatedGuest(name: string, seed: number, extra: { memoryBackendFile?: string } = {}): Promise<{ guest: Guest; file: string }> {
  const guest = await readyGuest({ dir: path.join(dir, name), name, memMiB: 256, fillMiB: 64, seed, ...extra });
  guests.push(guest);
  const file = path.join(dir, `${name}.vms`);
  const save = await cli(['save', '--qmp', guest.qmpPath, '--out', file, '--after', 'stop', '--channels', '2', '--json']);
  expect(save.stderr).toBe('');
  expect(save.code).toBe(0);
  await guest.exited;
  return { guest, file };
}

let cliFile: string | undefined;

it('CLI --launch --lazy: the VM runs on its RAM mapped from the unchanged file and keeps verifying it', async () => {
  const { guest, file } = await hibernatedGuest('cli', 51);
  cliFile = file;
  const hashBefore = await sha256File(file);
  const before = guest.serialText().length;
  const lastPass = guest.lastPass();

  const restore = await cli(['restore', '--in', file, '--qmp', guest.qmpPath, '--launch', '--lazy', '--json']);
  expect(restore.stderr).toBe('');
  expect(restore.code).toBe(0);
  const r = restore.json as unknown as RestoreResult;
  launchedPids.push(r.launched!.pid);
  expect(r).toMatchObject({ mode: 'lazy', running: true, directIO: false });
  expect(r.lazyFallbackReason).toBeUndefined();
  expect(r.lazy).toMatchObject({ blockId: 'pc.ram', mappedBytes: 256 << 20, file: fs.realpathSync(file) });
  // QEMU loaded only the small blocks: far less than the 64 MiB the guest filled.
  expect(r.bytes).toBeLessThan(16 << 20);
  expect(procArgv(r.launched!.pid)!.join(' ')).toContain(`mem-path=${fs.realpathSync(file)},offset=`);

  // The guest goes on where it was: every sweep re-reads the 64 MiB pattern from the mapping.
  const next = await expectVerifying(guest.serialPath, { after: lastPass, from: before });
  expect(next).toBeGreaterThan(lastPass);
  const residency = lazyResidency(r.launched!.pid, fs.realpathSync(file))!;
  expect(residency.mappedBytes).toBe(256 << 20);
  expect(residency.residentBytes).toBeGreaterThanOrEqual(64 << 20);
  expect(residency.privateBytes).toBeGreaterThan(0); // the guest's writes: private copies
  expect(await sha256File(file)).toBe(hashBefore);
});

it('copies restored lazily from one file share its pages and diverge independently; the file can go while they run', async () => {
  const { guest: source, file } = await hibernatedGuest('src', 52);
  const hashBefore = await sha256File(file);
  const lastPass = source.lastPass();
  const srcDir = path.dirname(source.qmpPath);
  const copies: Array<{ name: string; socket: string; serial: string; pid: number }> = [];
  for (const name of ['copy-a', 'copy-b']) {
    const copyDir = path.join(dir, name);
    const socket = path.join(copyDir, 'qmp.sock');
    const r = await restoreVm({
      inPath: file,
      qmpSocket: socket,
      directIO: 'auto',
      launch: true,
      lazy: { prefetch: name === 'copy-a' },
      relaunch: { rewrite: { paths: [[srcDir, copyDir]], name } },
    });
    launchedPids.push(r.launched!.pid);
    expect(r.mode).toBe('lazy');
    if (name === 'copy-a') expect(r.lazy!.prefetch).toMatchObject({ pid: expect.any(Number) });
    else expect(r.lazy!.prefetch).toBe('off');
    copies.push({ name, socket, serial: path.join(copyDir, 'serial.log'), pid: r.launched!.pid });
  }
  for (const c of copies) await expectVerifying(c.serial, { after: lastPass });

  // Both map the same page-cache pages of the file: resident pages counted as shared.
  const real = fs.realpathSync(file);
  for (const c of copies) expect(lazyResidency(c.pid, real)!.sharedBytes).toBeGreaterThan(0);

  // Deleting the file under running VMs is safe: the mappings keep it alive.
  fs.rmSync(file);
  const [a, b] = copies as [(typeof copies)[0], (typeof copies)[0]];
  const qa = await QmpClient.connect(a.socket);
  const qb = await QmpClient.connect(b.socket);
  try {
    await qa.execute('stop');
    const bPass = await expectVerifying(b.serial, { after: lastPass });
    await expectVerifying(b.serial, { after: bPass }); // b runs on (and writes) while a is paused
    await qb.execute('stop');
    const dumpA = path.join(dir, 'a.ram');
    const dumpB = path.join(dir, 'b.ram');
    await qa.execute('pmemsave', { val: 0, size: 256 << 20, filename: dumpA });
    await qb.execute('pmemsave', { val: 0, size: 256 << 20, filename: dumpB });
    // Private mappings: each copy's RAM is its own (a shared mapping would give identical dumps).
    expect(await sha256File(dumpA)).not.toBe(await sha256File(dumpB));
    expect(lazyResidency(a.pid, real)).toBeDefined(); // still mapped, shown as "(deleted)"
    await qa.execute('cont');
    await qb.execute('cont');
    for (const c of copies) await expectVerifying(c.serial, { after: lastPass, from: fs.readFileSync(c.serial, 'latin1').length });
  } finally {
    qa.close();
    qb.close();
  }
  // The deleted file's bytes are untouched: read them back through a mapping's /proc link.
  const mapped = fs.readdirSync(`/proc/${a.pid}/map_files`).map((f) => `/proc/${a.pid}/map_files/${f}`);
  const link = mapped.find((m) => fs.readlinkSync(m).startsWith(real));
  expect(link).toBeDefined();
  expect(await sha256File(link!)).toBe(hashBefore);

  // A lazily restored VM saves like any other: the recorded command line no longer names the old file.
  const again = path.join(dir, 'copy-a-again.vms');
  const save = await cli(['save', '--qmp', a.socket, '--out', again, '--after', 'stop', '--json']);
  expect(save.stderr).toBe('');
  expect(save.code).toBe(0);
  const argv = readHeader(again).metadata.qemu.argv.join(' ');
  expect(argv).not.toContain(real);
  expect(argv).toContain('memory-backend-ram,id=pc.ram');
  const before = fs.readFileSync(a.serial, 'latin1').length;
  const restored = await cli(['restore', '--in', again, '--qmp', a.socket, '--launch', '--json']);
  expect(restored.stderr).toBe('');
  expect(restored.code).toBe(0);
  launchedPids.push((restored.json!.launched as { pid: number }).pid);
  expect(restored.json).toMatchObject({ mode: 'eager' });
  await expectVerifying(a.serial, { after: lastPass, from: before });
});

it('a damaged file fails the lazy restore and quits the QEMU started while it was being checked', async () => {
  const source = cliFile ?? (await hibernatedGuest('damaged-src', 54)).file; // the first test's file, when it ran
  const bad = path.join(dir, 'damaged.vms');
  fs.copyFileSync(source, bad);
  const fd = fs.openSync(bad, 'r+');
  const at = fs.fstatSync(fd).size - 64; // device state: covered by the structure checksum, not by the header's CRC
  const byte = Buffer.alloc(1);
  fs.readSync(fd, byte, 0, 1, at);
  byte[0] = byte[0]! ^ 0xff;
  fs.writeSync(fd, byte, 0, 1, at);
  fs.closeSync(fd);
  const socket = path.join(dir, 'damaged', 'qmp.sock');
  fs.mkdirSync(path.dirname(socket), { recursive: true });
  const restore = await cli(['restore', '--in', bad, '--qmp', socket, '--launch', '--lazy']);
  expect(restore.code).toBe(1);
  expect(restore.stderr).toMatch(/is corrupted: QEMU's stream headers or device state changed/);
  // A QEMU was started early (its log exists) and is gone again.
  expect(fs.existsSync(`${socket}.qemu.log`)).toBe(true);
  expect(pidsWhere((argv) => argv.some((a) => a.includes(socket)))).toEqual([]);
});

/** Bytes of `file` in the page cache (util-linux fincore). */
async function cachedBytes(file: string): Promise<number> {
  const { stdout } = await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]);
  return Number(stdout.trim());
}

it('the prefetch reads the RAM of a paused lazy VM into the page cache; without it nothing is read', async () => {
  const source = cliFile ?? (await hibernatedGuest('prefetch-src', 55)).file;
  for (const prefetch of [false, true]) {
    // A fresh copy, synced and dropped from the page cache: only a reader brings its pages back.
    const file = path.join(dir, `prefetch-${prefetch}.vms`);
    fs.copyFileSync(source, file);
    const fd = fs.openSync(file, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    await run('dd', [`if=${file}`, 'iflag=nocache', 'count=0']);
    expect(await cachedBytes(file)).toBeLessThan(4 << 20);
    const socket = path.join(dir, `prefetch-${prefetch}`, 'qmp.sock');
    const restore = await cli(['restore', '--in', file, '--qmp', socket, '--launch', '--lazy', '--paused', '--json', ...(prefetch ? [] : ['--no-prefetch'])]);
    expect(restore.code).toBe(0);
    launchedPids.push((restore.json!.launched as { pid: number }).pid);
    expect(restore.json).toMatchObject({ mode: 'lazy', running: false });
    if (prefetch) {
      // The guest is paused: the 64 MiB it filled can only come in through the prefetch.
      await poll(`the prefetch to bring 64 MiB of ${file} into the page cache`, async () => (await cachedBytes(file)) >= 64 << 20, {
        timeoutMs: 60_000,
        describe: async () => `${await cachedBytes(file)} bytes cached`,
      });
    } else {
      await sleep(3_000); // time in which a prefetch would have read the file
      expect(await cachedBytes(file)).toBeLessThan(16 << 20);
    }
  }
});

it('falls back to an eager restore, with the reason, when the RAM is a shared file', async () => {
  const shm = path.join('/dev/shm', `vmsnap-lazy-test-${process.pid}.ram`);
  try {
    const { guest, file } = await hibernatedGuest('shared', 53, { memoryBackendFile: shm });
    const before = guest.serialText().length;
    const restore = await cli(['restore', '--in', file, '--qmp', guest.qmpPath, '--launch', '--lazy', '--json']);
    expect(restore.code).toBe(0);
    launchedPids.push((restore.json!.launched as { pid: number }).pid);
    expect(restore.json).toMatchObject({ mode: 'eager' });
    expect(restore.json!.lazyFallbackReason).toMatch(/keeps its RAM in a file \(memory-backend-file/);
    await expectVerifying(guest.serialPath, { from: before });
  } finally {
    fs.rmSync(shm, { force: true });
  }
});
