// `node dist/bench/pod-lazy-main.js`: the VM-pod lazy restore section of `npm run bench` on its
// own (see bench/pod-lazy.ts). Needs `npm run build` first, and starts (or reuses) the node
// instance of the local stack. Env: VMSNAP_BENCH_REPS (3 at least), VMSNAP_BENCH_POD_LAZY_FILL_MIB
// (1536). Writes bench/results/pod-lazy.json.
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { podLazySection } from './pod-lazy.js';

const row = await podLazySection((l) => console.log(l));
const out = path.join(packageRoot(), 'bench/results/pod-lazy.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), ...row }, null, 2) + '\n');
console.log(`wrote ${out}`);
process.exit(0);
