// The pause of a live save (captureMode Live) of a busy guest: the test guest (test/guest/init.c)
// rewrites a region of its memory at a set rate while a 1 ms ticker runs, and each save is seen
// three ways:
// - QEMU's `downtime` (query-migrate: from stopping the VM to the end of the copy);
// - vmsnap's vmPausedMs (that, plus the wait until the engine's `cont` was answered);
// - the guest's, watched from the host: its RAM is a file in /dev/shm, and a worker thread reads
//   the ticker's counter every ~0.2 ms; the longest time between two reads of the same value is
//   how long the guest was held, whatever held it (the final pause, vCPU throttling, the host's
//   scheduler). Counted between reads only: a watcher the host delays sees less, never more;
// - the guest's own clock (the longest gap between its ticks): it stands still while QEMU has the
//   VM stopped, so it shows the stalls of a running guest, not the final pause.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { saveVm, type SaveResult } from '../agent/src/engine/save.js';
import { startGuest, type Guest } from '../kit/guest.js';
import { sleep } from '../kit/poll.js';

export interface LivePauseRow {
  sizeGiB: number;
  /** What the guest's writer did, MiB/s (median of its 1 s reports during the saves). */
  writtenMiBps: number;
  /** Medians over the saves. */
  qemuDowntimeMs: number;
  vmPausedMs: number;
  hostSeenStallMs: number;
  guestClockGapMs: number;
  saveMs: number;
  cpuThrottlePeakPercent: number;
  convergence: string;
  /** Every save's figures, for the record. */
  runs: Array<{ qemuDowntimeMs: number; vmPausedMs: number; hostSeenStallMs: number; guestClockGapMs: number; saveMs: number }>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Where guest-physical `pa` sits in the RAM file of a `pc` machine (RAM above 3 GiB moves above 4 GiB). */
export function ramFileOffset(pa: number, ramBytes: number): number {
  const below4g = ramBytes >= 0xe0000000 ? 0xc0000000 : ramBytes;
  return pa < 2 ** 32 ? pa : pa - 2 ** 32 + below4g;
}

// Plain JS for the worker (no TypeScript loader there): polls a 64-bit counter in a file until told to stop.
const WATCHER = `
const { workerData, parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const { file, offset, stop } = workerData;
const flag = new Int32Array(stop);
const fd = fs.openSync(file, 'r');
const buf = Buffer.alloc(8);
let last, since, seen, max = 0;
while (Atomics.load(flag, 0) === 0) {
  fs.readSync(fd, buf, 0, 8, offset);
  const v = buf.readBigUInt64LE(0), t = performance.now();
  if (v !== last) {
    last = v; since = t;
  }
  seen = t;
  max = Math.max(max, seen - since);
  Atomics.wait(flag, 0, 0, 0.2);
}
fs.closeSync(fd);
parentPort.postMessage(max);
`;

/** Watches the ticker's counter from the host until the returned function is called; that resolves to the longest stall (ms). */
function watchTicks(file: string, offset: number): () => Promise<number> {
  const stop = new SharedArrayBuffer(4);
  const worker = new Worker(WATCHER, { eval: true, workerData: { file, offset, stop } });
  const result = new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return async () => {
    Atomics.store(new Int32Array(stop), 0, 1);
    const max = await result;
    await worker.terminate();
    return max;
  };
}


/** The TICK lines of the serial text: each second's longest gap (µs) and MiB written. */
function ticks(text: string): Array<{ gapUs: number; writtenMiB: number }> {
  return [...text.matchAll(/VMSNAP TICK n=\d+ max_gap_us=(\d+) written_mib=(\d+)/g)].map((m) => ({ gapUs: Number(m[1]), writtenMiB: Number(m[2]) }));
}

export async function measureLivePause(opts: {
  dir: string;
  sizesGiB: number[];
  reps: number;
  dirtyMiBps: number;
  log: (l: string) => void;
}): Promise<LivePauseRow[]> {
  const rows: LivePauseRow[] = [];
  for (const sizeGiB of opts.sizesGiB) {
    const ramBytes = sizeGiB * 2 ** 30;
    // The guest's RAM, the guest's fill and the page cache of the saves: leave the host room.
    const availableBytes = Number(/MemAvailable:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) * 1024;
    if (availableBytes < ramBytes + 4 * 2 ** 30) {
      opts.log(`  ${sizeGiB} GiB: skipped, ${Math.round(availableBytes / 2 ** 30)} GiB available`);
      continue;
    }
    const dir = path.join(opts.dir, `live-pause-${sizeGiB}g`);
    fs.rmSync(dir, { recursive: true, force: true });
    const memFile = path.join('/dev/shm', `vmsnap-bench-live-${process.pid}-${sizeGiB}g.ram`);
    let guest: Guest | undefined;
    try {
      guest = await startGuest({
        dir,
        name: `live-${sizeGiB}g`,
        memMiB: sizeGiB * 1024,
        fillMiB: sizeGiB * 512, // half the RAM holds data the first pass must copy
        memoryBackendFile: memFile,
        kernelArgs: ['vmsnap.dirty_mib=256', `vmsnap.dirty_mibps=${opts.dirtyMiBps}`, 'vmsnap.tick=1'],
      });
      const pa = Number.parseInt((await guest.waitForSerial(/VMSNAP TICKER pa=0x([0-9a-f]+)/, 120_000))[1]!, 16);
      await guest.waitForSerial(/VMSNAP PASS n=1 ok/, 600_000);
      const offset = ramFileOffset(pa, ramBytes);
      const magic = Buffer.alloc(8);
      const fd = fs.openSync(memFile, 'r');
      fs.readSync(fd, magic, 0, 8, offset);
      fs.closeSync(fd);
      if (magic.toString('latin1') !== 'VMSNAPTK') throw new Error(`no ticker page at ${memFile}+${offset} (guest-physical 0x${pa.toString(16)})`);

      const runs: LivePauseRow['runs'] = [];
      const written: number[] = [];
      let last: SaveResult | undefined;
      for (let i = 0; i < opts.reps; i++) {
        await sleep(2000); // the writer at its pace, a TICK line or two before the save
        const from = guest.serialText().length;
        const stopWatch = watchTicks(memFile, offset + 8);
        const r = await saveVm({ qmpSocket: guest.qmpPath, outPath: path.join(dir, 'live.vms'), channels: 4, directIO: 'auto', after: 'resume', live: true, overwrite: true });
        await sleep(1200); // the guest's report of the second the save ended in
        const hostSeenStallMs = await stopWatch();
        const t = ticks(guest.serialText().slice(from));
        written.push(...t.map((x) => x.writtenMiB));
        runs.push({
          qemuDowntimeMs: r.capture?.qemuDowntimeMs ?? NaN,
          vmPausedMs: Math.round(r.vmPausedMs),
          hostSeenStallMs: Math.round(hostSeenStallMs * 10) / 10,
          guestClockGapMs: Math.max(0, ...t.map((x) => x.gapUs)) / 1000,
          saveMs: r.durationMs,
        });
        last = r;
        fs.rmSync(path.join(dir, 'live.vms'), { force: true });
      }
      const pick = (k: keyof LivePauseRow['runs'][number]) => median(runs.map((x) => x[k]));
      const row: LivePauseRow = {
        sizeGiB,
        writtenMiBps: written.length ? median(written) : NaN,
        qemuDowntimeMs: pick('qemuDowntimeMs'),
        vmPausedMs: pick('vmPausedMs'),
        hostSeenStallMs: pick('hostSeenStallMs'),
        guestClockGapMs: pick('guestClockGapMs'),
        saveMs: pick('saveMs'),
        cpuThrottlePeakPercent: last?.capture?.cpuThrottlePeakPercent ?? 0,
        convergence: last?.capture?.convergence ?? '-',
        runs,
      };
      rows.push(row);
      opts.log(
        `  ${sizeGiB} GiB, writer ${row.writtenMiBps} MiB/s: QEMU downtime ${row.qemuDowntimeMs} ms, vmsnap pause ${row.vmPausedMs} ms, ` +
          `guest held (seen from the host) ${row.hostSeenStallMs} ms, guest clock's longest gap ${row.guestClockGapMs} ms; save ${row.saveMs} ms; ` +
          `${row.convergence}, throttle peak ${row.cpuThrottlePeakPercent}%; runs ${JSON.stringify(runs.map((x) => [x.qemuDowntimeMs, x.vmPausedMs, x.hostSeenStallMs]))}`,
      );
    } finally {
      await guest?.kill('SIGKILL').catch(() => undefined);
      fs.rmSync(memFile, { force: true });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  return rows;
}

/** The comparison the bench prints: each size's pauses against `goalMs` (a ratio <= 1 meets it). */
export function comparePauses(rows: LivePauseRow[], goalMs: number): string[] {
  return rows.map(
    (r) =>
      `  ${r.sizeGiB} GiB: QEMU downtime ${r.qemuDowntimeMs} ms = ${(r.qemuDowntimeMs / goalMs).toFixed(2)}x of ${goalMs} ms; ` +
      `guest held ${r.hostSeenStallMs} ms = ${(r.hostSeenStallMs / goalMs).toFixed(2)}x (load average ${os.loadavg()[0]!.toFixed(1)})`,
  );
}
