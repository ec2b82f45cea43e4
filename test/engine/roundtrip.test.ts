// Save and restore real TCG guests that fill memory with a known pattern and
// keep checking it: after a restore the guest must go on verifying, intact.
import fs from 'node:fs';
import path from 'node:path';
import { saveVm } from '../../agent/src/engine/save.js';
import { restoreVm } from '../../agent/src/engine/restore.js';
import type { QmpClient } from '../../agent/src/qmp/client.js';
import { startGuest, type Guest } from '../../kit/guest.js';
import { cli, readyGuest, scratchDir, sha256File } from './harness.js';
import { recordPlainRam } from '../../bench/qemu-vm.js';
import { preallocatedLaunch } from '../../bench/prealloc.js';
import { qmpExecute } from '../../kit/qemu.js';
import { createHash } from 'node:crypto';
import { expectVerifying } from '../../kit/guest.js';
import { procArgv } from '../../kit/qemu.js';
import { poll } from '../../kit/poll.js';


const guests: Guest[] = [];
let dir: string;

beforeAll(() => {
  dir = scratchDir('roundtrip');
});
afterAll(async () => {
  await Promise.all(guests.map((g) => g.kill().catch(() => undefined)));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function guest(name: string, opts: Parameters<typeof startGuest>[0] extends infer O ? Partial<O> : never = {}): Promise<Guest> {
  const g = await readyGuest({ dir: path.join(dir, name), name, memMiB: 256, fillMiB: 64, ...opts });
  guests.push(g);
  return g;
}

async function target(name: string, extra: Partial<Parameters<typeof startGuest>[0]> = {}): Promise<Guest> {
  const g = await startGuest({ dir: path.join(dir, name), name, memMiB: 256, fillMiB: 64, incomingDefer: true, ...extra });
  guests.push(g);
  return g;
}

async function waitGone(pid: number): Promise<void> {
  await poll(`pid ${pid} to end`, () => !fs.existsSync(`/proc/${pid}`), { timeoutMs: 10_000, intervalMs: 25 });
}

async function migrationParameters(client: QmpClient): Promise<{ channels: number; directIO: boolean; maxBandwidth: number }> {
  const p = await client.execute<Record<string, unknown>>('query-migrate-parameters');
  return { channels: p['multifd-channels'] as number, directIO: p['direct-io'] as boolean, maxBandwidth: p['max-bandwidth'] as number };
}

it('CLI: paused save with 4 channels and O_DIRECT, then restore into an -incoming defer QEMU', async () => {
  const source = await guest('cli-src', { seed: 11 });
  const file = path.join(dir, 'cli.vms');
  const save = await cli(['save', '--qmp', source.qmpPath, '--out', file, '--channels', '4', '--direct-io', 'on', '--json']);
  expect(save.stderr).toBe('');
  expect(save.code).toBe(0);
  expect(save.json).toMatchObject({ channels: 4, directIO: true, path: file, after: 'resume' });
  expect(save.json!.bytes as number).toBeGreaterThanOrEqual(64 << 20);
  expect(save.json!.durationMs as number).toBeGreaterThan(0);
  expect(save.json!.throughputMiBps as number).toBeGreaterThan(0);

  // The source was resumed and keeps verifying.
  const passAtSave = source.lastPass();
  await expectVerifying(source.serialPath, { after: passAtSave });

  const inspect = await cli(['inspect', file, '--json']);
  expect(inspect.code).toBe(0);
  const report = inspect.json!;
  expect(report.state).toBe('complete');
  expect(report.problems).toEqual([]);
  const main = (report.ramBlocks as Array<{ id: string; pagesPresent: number; pages: number }>).find((b) => b.id === 'pc.ram')!;
  expect(main.pages).toBe((256 << 20) / 4096);
  expect(main.pagesPresent).toBeGreaterThanOrEqual((64 << 20) / 4096);
  expect(report.allocatedBytes as number).toBeLessThan(report.logicalBytes as number); // sparse

  const dest = await target('cli-dst', { seed: 11 });
  const restore = await cli(['restore', '--in', file, '--qmp', dest.qmpPath, '--json']);
  expect(restore.stderr).toBe('');
  expect(restore.code).toBe(0);
  expect(restore.json).toMatchObject({ channels: 4, directIO: true, running: true });
  await expectVerifying(dest.serialPath);
});

it('live save with 8 channels and buffered I/O, restore with 1 channel and O_DIRECT: QEMU uses what was asked', async () => {
  const source = await guest('live-src', { seed: 22 });
  const file = path.join(dir, 'live.vms');
  let during: Awaited<ReturnType<typeof migrationParameters>> | undefined;
  let statusDuring: string | undefined;
  const progress: number[] = [];
  const saved = await saveVm({
    qmpSocket: source.qmpPath,
    outPath: file,
    channels: 8,
    directIO: 'off',
    after: 'resume',
    live: true,
    pollMs: 20,
    onProgress: (p) => progress.push(p.bytesTotal),
  }, {
    onMigrating: async (client) => {
      during = await migrationParameters(client);
      statusDuring = (await client.execute<{ status: string }>('query-status')).status;
    },
  });
  expect(during).toEqual({ channels: 8, directIO: false, maxBandwidth: 0 });
  expect(['running', 'finish-migrate', 'postmigrate']).toContain(statusDuring);
  expect(saved).toMatchObject({ channels: 8, directIO: false });
  expect(saved.directIOReason).toMatch(/turned off/);
  expect(progress.length).toBeGreaterThan(0);
  expect(progress.at(-1)).toBeGreaterThanOrEqual(256 << 20);
  await expectVerifying(source.serialPath, { after: source.lastPass() });

  const dest = await target('live-dst', { seed: 22 });
  let restoreParams: Awaited<ReturnType<typeof migrationParameters>> | undefined;
  const restored = await restoreVm({
    inPath: file,
    qmpSocket: dest.qmpPath,
    channels: 1,
    directIO: 'on',
  }, {
    onMigrating: async (client) => {
      restoreParams = await migrationParameters(client);
    },
  });
  expect(restoreParams).toMatchObject({ channels: 1, directIO: true });
  expect(restored).toMatchObject({ channels: 1, directIO: true, running: true });
  await expectVerifying(dest.serialPath);
});

it('hibernate (--after stop) then restore --launch from the recorded command line', async () => {
  const source = await guest('hib', { seed: 33 });
  const file = path.join(dir, 'hib.vms');
  const save = await cli(['save', '--qmp', source.qmpPath, '--out', file, '--after', 'stop', '--channels', '2', '--json']);
  expect(save.code).toBe(0);
  expect(save.json).toMatchObject({ after: 'stop', channels: 2 });
  await expect(Promise.race([source.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))])).resolves.not.toBe('still running');

  const before = source.serialText().length;
  const lastPass = source.lastPass();
  const restore = await cli(['restore', '--in', file, '--qmp', source.qmpPath, '--launch', '--json']);
  expect(restore.stderr).toBe('');
  expect(restore.code).toBe(0);
  const launched = restore.json!.launched as { pid: number };
  expect(launched.pid).toBeGreaterThan(0);
  try {
    // The relaunched QEMU appends to the same serial log: the guest goes on where it was.
    const next = await expectVerifying(source.serialPath, { after: lastPass, from: before });
    expect(next).toBeGreaterThan(lastPass);
  } finally {
    process.kill(launched.pid, 'SIGKILL');
  }
});

it('an eager --launch restore does not preallocate: the channels fault the RAM in beside their reads', async () => {
  const source = await guest('faulted', { seed: 56, fillMiB: 160 });
  const file = path.join(dir, 'faulted.vms');
  expect((await cli(['save', '--qmp', source.qmpPath, '--out', file, '--after', 'stop', '--channels', '2'])).code).toBe(0);
  await source.exited;
  const eager = await cli(['restore', '--in', file, '--qmp', source.qmpPath, '--launch', '--json']);
  expect(eager.code).toBe(0);
  const pid = (eager.json!.launched as { pid: number }).pid;
  try {
    expect(procArgv(pid)!.join(' ')).not.toMatch(/prealloc/);
    await expectVerifying(source.serialPath, { after: source.lastPass() });
  } finally {
    process.kill(pid, 'SIGKILL');
  }
});

it("the bench's preallocated launch (a launch-argv hook) preallocates first; a later lazy restore of that VM maps it instead", async () => {
  const source = await guest('prealloc', { seed: 55, fillMiB: 160 });
  const file = path.join(dir, 'prealloc.vms');
  expect((await cli(['save', '--qmp', source.qmpPath, '--out', file, '--after', 'stop', '--channels', '2'])).code).toBe(0);
  await source.exited;
  const skipped: string[] = [];
  const eager = await restoreVm({ inPath: file, qmpSocket: source.qmpPath, directIO: 'auto', launch: true }, { launchArgv: preallocatedLaunch((why) => skipped.push(why)) });
  const eagerPid = eager.launched!.pid;
  try {
    expect(skipped).toEqual([]);
    expect(procArgv(eagerPid)!.join(' ')).toMatch(/memory-backend-ram,id=pc\.ram,size=268435456,prealloc=on,prealloc-threads=\d/);
    await expectVerifying(source.serialPath, { after: source.lastPass() });
    // Saved again: the recorded command line now has the preallocated backend; a lazy restore drops it.
    const again = path.join(dir, 'prealloc-again.vms');
    expect((await cli(['save', '--qmp', source.qmpPath, '--out', again, '--after', 'stop'])).code).toBe(0);
    await waitGone(eagerPid);
    const before = source.serialText().length;
    const lazy = await cli(['restore', '--in', again, '--qmp', source.qmpPath, '--launch', '--lazy', '--no-prefetch', '--json']);
    expect(lazy.code).toBe(0);
    expect(lazy.json!.mode).toBe('lazy');
    const lazyPid = (lazy.json!.launched as { pid: number }).pid;
    try {
      expect(procArgv(lazyPid)!.join(' ')).toMatch(/memory-backend-file,id=pc\.ram,/);
      expect(procArgv(lazyPid)!.join(' ')).not.toMatch(/prealloc=/);
      await expectVerifying(source.serialPath, { from: before });
    } finally {
      process.kill(lazyPid, 'SIGKILL');
    }
  } finally {
    try {
      process.kill(eagerPid, 'SIGKILL');
    } catch {
      // saved with --after stop: gone already
    }
  }
});

// RAM as the guest left it against RAM as a launched restore loaded it: the
// source keeps its RAM in a file (what it held when QEMU quit after the save);
// the restored QEMU gets plain anonymous RAM, faulted in by the channels during
// the load, and dumps it with pmemsave while still paused.
async function expectLaunchedRamBitExact(name: string, save: string[]): Promise<void> {
  const srcMem = path.join('/dev/shm', `vmsnap-test-${process.pid}-${name}.ram`);
  const dump = path.join('/dev/shm', `vmsnap-test-${process.pid}-${name}.dump`);
  let pid: number | undefined;
  try {
    const source = await guest(name, { seed: 57, fillMiB: 160, memoryBackendFile: srcMem });
    const file = path.join(dir, `${name}.vms`);
    const saved = await cli(['save', '--qmp', source.qmpPath, '--out', file, '--after', 'stop', '--channels', '4', ...save, '--json']);
    expect(saved.code).toBe(0);
    await source.exited;
    recordPlainRam(file);
    const sock = path.join(dir, `${name}-restored.sock`);
    const restored = await cli(['restore', '--in', file, '--qmp', sock, '--launch', '--paused', '--channels', '4', '--direct-io', 'on', '--json']);
    expect(restored.stderr).toBe('');
    expect(restored.json).toMatchObject({ running: false, directIO: true, channels: 4, mode: 'eager' });
    pid = (restored.json!.launched as { pid: number }).pid;
    expect(procArgv(pid)!.join(' ')).not.toMatch(/memory-backend-file|prealloc/);
    await qmpExecute(sock, 'pmemsave', { val: 0, size: 256 << 20, filename: dump });
    // Guest-physical 640 KiB-1 MiB is the legacy VGA/ROM window, not RAM: compared around it.
    for (const [from, to] of [[0, 0xa0000], [0x100000, 256 << 20]] as const) {
      expect(await sha256Range(dump, from, to)).toBe(await sha256Range(srcMem, from, to));
    }
  } finally {
    if (pid) process.kill(pid, 'SIGKILL');
    fs.rmSync(srcMem, { force: true });
    fs.rmSync(dump, { force: true });
  }
}

async function sha256Range(file: string, from: number, to: number): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { start: from, end: to - 1 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

it('an eager --launch restore without preallocation loads RAM bit-for-bit (paused save)', async () => {
  await expectLaunchedRamBitExact('faulted-bits', []);
});

it('an eager --launch restore without preallocation loads RAM bit-for-bit after a live save of a running guest', async () => {
  await expectLaunchedRamBitExact('faulted-live-bits', ['--live']);
});

it('restored RAM is bit-for-bit the saved RAM (memory-backend-file on both sides)', async () => {
  const srcMem = path.join('/dev/shm', `vmsnap-test-${process.pid}-src.ram`);
  const dstMem = path.join('/dev/shm', `vmsnap-test-${process.pid}-dst.ram`);
  try {
    const source = await guest('bits-src', { seed: 44, memoryBackendFile: srcMem });
    const file = path.join(dir, 'bits.vms');
    // --after stop: QEMU quits with its RAM file left exactly as saved.
    const save = await cli(['save', '--qmp', source.qmpPath, '--out', file, '--after', 'stop', '--json']);
    expect(save.code).toBe(0);
    await source.exited;
    const dest = await target('bits-dst', { seed: 44, memoryBackendFile: dstMem });
    const restore = await cli(['restore', '--in', file, '--qmp', dest.qmpPath, '--paused', '--json']);
    expect(restore.code).toBe(0);
    expect(restore.json).toMatchObject({ running: false });
    expect(await sha256File(dstMem)).toBe(await sha256File(srcMem));
  } finally {
    fs.rmSync(srcMem, { force: true });
    fs.rmSync(dstMem, { force: true });
  }
});
