// `node dist/bench/disks-main.js`: only the disk-freeze measurement of `npm run bench`
// (see bench/disks.ts). Env: VMSNAP_BENCH_REPS (3), VMSNAP_BENCH_DIR (/var/tmp/vmsnap-bench).
// Writes bench/results/disks.json.
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { measureDiskPause } from './disks.js';

const reps = Number(process.env['VMSNAP_BENCH_REPS'] ?? 3);
const dir = process.env['VMSNAP_BENCH_DIR'] ?? '/var/tmp/vmsnap-bench';
const rows = await measureDiskPause({ dir, ramGiB: 1, diskGiB: 16, reps, log: (l) => console.log(l) });
console.table(rows);
const out = path.join(packageRoot(), 'bench/results/disks.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), reps, rows }, null, 2) + '\n');
console.log(`wrote ${out}`);
process.exit(0);
