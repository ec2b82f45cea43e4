// `node dist/bench/live-pause-main.js`: the live-pause section of `npm run bench` on its own (see
// bench/live-pause.ts). Needs `npm run build` first.
// Env: VMSNAP_BENCH_LIVE_SIZES_GIB (default "1,2,4,8"; a size the host's free memory cannot hold is
// skipped), VMSNAP_BENCH_LIVE_MIBPS (the guest's writer, default 100), VMSNAP_BENCH_REPS (3),
// VMSNAP_BENCH_DIR (default /var/tmp/vmsnap-bench). Writes bench/results/live-pause.json.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { comparePauses, measureLivePause, type LivePauseRow } from './live-pause.js';

/** The pause the comparison is printed against (ms). */
const PAUSE_GOAL_MS = 20;

export async function livePauseSection(log: (l: string) => void, dir = process.env.VMSNAP_BENCH_DIR ?? '/var/tmp/vmsnap-bench'): Promise<LivePauseRow[]> {
  const numbers = (env: string | undefined, fallback: number[]) => (env ? env.split(',').map(Number).filter((n) => n > 0) : fallback);
  const sizesGiB = numbers(process.env['VMSNAP_BENCH_LIVE_SIZES_GIB'], [1, 2, 4, 8]);
  const dirtyMiBps = Number(process.env['VMSNAP_BENCH_LIVE_MIBPS'] ?? 100);
  const reps = Number(process.env['VMSNAP_BENCH_REPS'] ?? 3);
  const loadBefore = os.loadavg()[0]!;
  log(`live capture pause: test guests of ${sizesGiB.join(', ')} GiB writing ${dirtyMiBps} MiB/s, ${reps} live saves each (4 channels), medians; load average ${loadBefore.toFixed(1)}`);
  fs.mkdirSync(dir, { recursive: true });
  const rows = await measureLivePause({ dir, sizesGiB, reps, dirtyMiBps, log });
  log(`against a ${PAUSE_GOAL_MS} ms pause:`);
  for (const l of comparePauses(rows, PAUSE_GOAL_MS)) log(l);
  const resultsDir = path.join(packageRoot(), 'bench/results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const out = path.join(resultsDir, 'live-pause.json');
  const report = { date: new Date().toISOString(), dirtyMiBps, reps, loadAverage: { before: loadBefore, after: os.loadavg()[0] }, nproc: os.cpus().length, rows };
  fs.writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  log(`wrote ${out}`);
  return rows;
}

if (process.argv[1]?.endsWith('live-pause-main.js')) {
  await livePauseSection((l) => console.log(l));
  process.exit(0);
}
