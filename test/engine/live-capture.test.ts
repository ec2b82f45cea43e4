// A live save of a guest that dirties memory faster than the disk writes: without a convergence
// method QEMU would copy forever (each pass finds the guest's region dirty again); with the one
// the engine chose (auto-converge under TCG) it finishes, and the snapshot restores intact.
// The disk is made slow for the source QEMU alone with the kernel's block throttle (cgroup blkio),
// so the guest outruns it by far on any machine.
import fs from 'node:fs';
import path from 'node:path';
import { saveVm } from '../../agent/src/engine/save.js';
import { restoreVm } from '../../agent/src/engine/restore.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { expectVerifying, startGuest, type Guest } from '../../kit/guest.js';
import { isRoot, readyGuest, scratchDir } from './harness.js';

/** What the source QEMU may write to the disk: far below what the guest dirties (GiB/s under TCG here). */
const DISK_BYTES_PER_SECOND = 128 << 20;
/** The guest rewrites this region as fast as it can (init.c vmsnap.dirty_mib, vmsnap.dirty_mibps=0). */
const GUEST_ARGS = ['vmsnap.dirty_mib=64', 'vmsnap.dirty_mibps=0', 'vmsnap.tick=1'];

const guests: Guest[] = [];
const cleanups: Array<() => void> = [];
let dir: string;

beforeAll(() => {
  dir = scratchDir('live-capture');
});
afterAll(async () => {
  await Promise.all(guests.map((g) => g.kill().catch(() => undefined)));
  for (const c of cleanups.splice(0)) c();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The whole disk (not a partition) under `dir`, as "major:minor". */
function diskOf(dir: string): string {
  const dev = fs.statSync(dir).dev;
  const id = `${(dev >> 8) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`;
  const sys = `/sys/dev/block/${id}`;
  return fs.existsSync(path.join(sys, 'partition')) ? fs.readFileSync(path.join(sys, '..', 'dev'), 'utf8').trim() : id;
}

/** Moves `pid` into a new block-I/O cgroup that lets it write `bps` bytes a second to the disk under `dir`. */
function throttleWrites(pid: number, dir: string, bps: number): () => void {
  const disk = diskOf(dir);
  const name = `vmsnap-live-capture-${process.pid}`;
  const v1 = '/sys/fs/cgroup/blkio';
  const [group, limitFile, limit, procs] = fs.existsSync(path.join(v1, 'blkio.throttle.write_bps_device'))
    ? [path.join(v1, name), 'blkio.throttle.write_bps_device', `${disk} ${bps}`, path.join(v1, 'cgroup.procs')]
    : [path.join('/sys/fs/cgroup', name), 'io.max', `${disk} wbps=${bps}`, '/sys/fs/cgroup/cgroup.procs'];
  fs.mkdirSync(group);
  fs.writeFileSync(path.join(group, limitFile), limit);
  fs.writeFileSync(path.join(group, 'cgroup.procs'), String(pid));
  return () => {
    if (fs.existsSync(`/proc/${pid}`)) fs.writeFileSync(procs, String(pid));
    fs.rmdirSync(group);
  };
}

(isRoot() ? it : it.skip)(
  'a live save of a guest dirtying memory faster than the disk writes finishes with auto-converge, and restores intact',
  async () => {
    const source = await readyGuest({ dir: path.join(dir, 'src'), name: 'live-src', memMiB: 512, fillMiB: 64, seed: 7, kernelArgs: GUEST_ARGS });
    guests.push(source);
    await source.waitForSerial(/VMSNAP TICK n=\d+ max_gap_us=\d+ written_mib=[1-9]/); // the writer runs
    cleanups.push(throttleWrites(source.pid, dir, DISK_BYTES_PER_SECOND));

    const file = path.join(dir, 'live.vms');
    // O_DIRECT: the page writes reach the block layer (and its throttle) from QEMU's own threads.
    const saved = await saveVm({ qmpSocket: source.qmpPath, outPath: file, channels: 2, directIO: 'on', after: 'resume', live: true });
    expect(saved.capture).toMatchObject({ convergence: 'AutoConverge', downtimeLimitMs: 10, qemuDowntimeMs: expect.any(Number) });
    expect(saved.capture!.reason).toMatch(/not KVM/);
    // It did the work: the guest was slowed until the copy caught up.
    expect(saved.capture!.cpuThrottlePeakPercent).toBeGreaterThan(0);
    expect(readHeader(file).metadata.capture.convergence).toBe('AutoConverge');
    // The source runs on and its memory check still passes.
    await expectVerifying(source.serialPath, { after: source.lastPass(), timeoutMs: 120_000 });

    const dest = await startGuest({ dir: path.join(dir, 'dst'), name: 'live-dst', memMiB: 512, fillMiB: 64, seed: 7, kernelArgs: GUEST_ARGS, incomingDefer: true });
    guests.push(dest);
    const restored = await restoreVm({ inPath: file, qmpSocket: dest.qmpPath, channels: 2, directIO: 'on' });
    expect(restored.running).toBe(true);
    await expectVerifying(dest.serialPath, { timeoutMs: 120_000 });
  },
  // Generous: a throttled guest and a slow disk take tens of seconds on a loaded machine.
  600_000,
);
