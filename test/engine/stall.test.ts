// A save or restore whose real QEMU stops doing anything with the file (here: SIGSTOP mid-way)
// is ended by the stall bound (what reaches the file, not what QMP says), and the VM runs on.
import fs from 'node:fs';
import path from 'node:path';
import { saveVm } from '../../agent/src/engine/save.js';
import { restoreVm } from '../../agent/src/engine/restore.js';
import { MigrationStalledError } from '../../agent/src/engine/stall.js';
import type { Guest } from '../../kit/guest.js';
import { startGuest } from '../../kit/guest.js';
import { readyGuest, scratchDir } from './harness.js';
import { expectVerifying } from '../../kit/guest.js';
import { qemuRunState } from '../../kit/qemu.js';
import { poll } from '../../kit/poll.js';

const STALL_MS = 3000;
const guests: Guest[] = [];
let dir: string;

beforeAll(() => {
  dir = scratchDir('stall');
});
afterAll(async () => {
  for (const g of guests) {
    try {
      process.kill(g.pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
  await Promise.all(guests.map((g) => g.kill().catch(() => undefined)));
  fs.rmSync(dir, { recursive: true, force: true });
});

const allocated = (file: string) => (fs.existsSync(file) ? fs.statSync(file).blocks * 512 : 0);

test('a save whose QEMU stops writing mid-way fails MigrationStalled, no file is left and the VM runs on after SIGCONT', async () => {
  const g = await readyGuest({ dir: path.join(dir, 'src'), name: 'stall-src', memMiB: 256, fillMiB: 96, seed: 5 });
  guests.push(g);
  const out = path.join(dir, 'stalled.vms');
  let stopped = false;
  let resumedByBound = false;
  const saving = saveVm({
    qmpSocket: g.qmpPath,
    outPath: out,
    channels: 2,
    directIO: 'off',
    after: 'resume',
    live: false,
    stallMs: STALL_MS,
    onStalled: () => {
      // The bound fired while QEMU was stopped; it gets going again so the agent can put it back.
      resumedByBound = stopped;
      process.kill(g.pid, 'SIGCONT');
    },
  }, {
    // Slow enough to be caught mid-way: 16 MiB/s for 96 MiB of filled RAM.
    onMigrating: (client) => client.execute('migrate-set-parameters', { 'max-bandwidth': 16 << 20 }).then(() => undefined),
  });
  const failed = saving.then(
    () => undefined,
    (err: unknown) => err,
  );
  await poll('the save to be part written', () => allocated(out) > 8 << 20, 60_000);
  process.kill(g.pid, 'SIGSTOP');
  stopped = true;
  const err = await failed;
  expect(err).toBeInstanceOf(MigrationStalledError);
  expect((err as Error).message).toMatch(/the save stalled: QEMU wrote nothing to the snapshot file for \d+ s \(\S+ allocated in the file/);
  expect(resumedByBound).toBe(true);
  // Put back: no partial file, no migration left running, the guest running and still verifying its memory.
  expect(fs.existsSync(out)).toBe(false);
  const state = await qemuRunState(g.qmpPath);
  expect(state.status).toBe('running');
  expect(['completed', 'cancelled']).toContain(state.migration);
  await expectVerifying(g.serialPath, { after: g.lastPass() });
}, 300_000);

test('a restore whose QEMU stops reading fails MigrationStalled; an honest one under the same bound succeeds', async () => {
  const src = await readyGuest({ dir: path.join(dir, 'src2'), name: 'stall-src2', memMiB: 256, fillMiB: 96, seed: 6 });
  guests.push(src);
  const file = path.join(dir, 'good.vms');
  await saveVm({ qmpSocket: src.qmpPath, outPath: file, channels: 2, directIO: 'off', after: 'stop', live: false, stallMs: STALL_MS });

  const target = await startGuest({ dir: path.join(dir, 'dst'), name: 'stall-dst', memMiB: 256, fillMiB: 96, seed: 6, incomingDefer: true });
  guests.push(target);
  let stalls = 0;
  const err = await restoreVm({
    inPath: file,
    qmpSocket: target.qmpPath,
    directIO: 'off',
    stallMs: STALL_MS,
    onStalled: () => {
      stalls++;
      process.kill(target.pid, 'SIGCONT');
    },
  }, {
    onMigrating: () => {
      process.kill(target.pid, 'SIGSTOP');
    },
  }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MigrationStalledError);
  expect((err as Error).message).toMatch(/the restore stalled: QEMU read nothing from the snapshot file for \d+ s/);
  expect(stalls).toBe(1);

  // The same bound does not cut short a restore whose QEMU reads: a fresh target loads and runs.
  const again = await startGuest({ dir: path.join(dir, 'dst2'), name: 'stall-dst2', memMiB: 256, fillMiB: 96, seed: 6, incomingDefer: true });
  guests.push(again);
  const r = await restoreVm({ inPath: file, qmpSocket: again.qmpPath, directIO: 'off', stallMs: STALL_MS });
  expect(r.running).toBe(true);
  await expectVerifying(again.serialPath);
}, 300_000);
