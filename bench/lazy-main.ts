// `node dist/bench/lazy-main.js`: the lazy-against-eager section of `npm run
// bench` on its own (see bench/lazy.ts). Needs `npm run build` first.
// Env: VMSNAP_BENCH_LAZY_SIZES_GIB (default "1,2,4,8"), VMSNAP_BENCH_LAZY_COPIES
// (10; 0 skips the copies), VMSNAP_BENCH_LAZY_COPY_MIB (256).
// Writes bench/results/lazy.json.
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { runLazyBench } from './lazy.js';

export async function lazySection(log: (l: string) => void): Promise<Awaited<ReturnType<typeof runLazyBench>>> {
  const numbers = (env: string | undefined, fallback: number[]) => (env ? env.split(',').map(Number).filter((n) => n > 0) : fallback);
  const sizesGiB = numbers(process.env['VMSNAP_BENCH_LAZY_SIZES_GIB'], [1, 2, 4, 8]);
  const copies = Number(process.env['VMSNAP_BENCH_LAZY_COPIES'] ?? 10);
  const copyMiB = Number(process.env['VMSNAP_BENCH_LAZY_COPY_MIB'] ?? 256);
  log(`lazy vs eager restore: test guests of ${sizesGiB.join(', ')} GiB (3/4 of RAM filled), ${copies} copies of a ${copyMiB} MiB guest`);
  const t0 = Date.now();
  const result = await runLazyBench({ sizesGiB, copies, copyMiB, log });
  const resultsDir = path.join(packageRoot(), 'bench/results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const out = path.join(resultsDir, 'lazy.json');
  fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), seconds: Math.round((Date.now() - t0) / 1000), ...result }, null, 2) + '\n');
  log(`wrote ${out}`);
  return result;
}

if (process.argv[1]?.endsWith('lazy-main.js')) {
  await lazySection((l) => console.log(l));
  process.exit(0);
}
