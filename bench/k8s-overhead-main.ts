// `node dist/bench/k8s-overhead-main.js`: the Kubernetes-overhead section of
// `npm run bench` on its own (see bench/k8s-overhead.ts). Needs `npm run build`
// first. Env: VMSNAP_BENCH_REPS (5 at least). Writes bench/results/k8s-overhead.json.
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { measureK8sOverhead } from './k8s-overhead.js';

const reps = Math.max(Number(process.env.VMSNAP_BENCH_REPS ?? 5), 5);
const row = await measureK8sOverhead({ sizeGiB: 2, reps, log: (l) => console.log(l) });
console.log(`Kubernetes overhead, 2 GiB VM: overhead ${row.overheadMs} ms, median of ${row.overheadMsRuns.join(', ')}`);
const out = path.join(packageRoot(), 'bench/results/k8s-overhead.json');
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), ...row }, null, 2) + '\n');
console.log(`wrote ${out}`);
process.exit(0);
