// `node dist/bench/libvirt-main.js`: vmsnap against libvirt 11's virsh save/restore
// (see bench/libvirt.ts). Needs root and `npm run build` first.
// Env: VMSNAP_BENCH_SIZES_GIB (default "1,2"), VMSNAP_BENCH_REPS (3), VMSNAP_BENCH_RESTORE_PAUSE_MS (5000),
// VMSNAP_BENCH_CHANNELS (4: only the first value is used),
// VMSNAP_BENCH_DIR (default /var/tmp/vmsnap-bench: the filesystem under test).
// Writes bench/results/libvirt.json.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { runLibvirtComparison } from './libvirt.js';

const numbers = (env: string | undefined, fallback: number[]) => (env ? env.split(',').map(Number).filter((n) => n > 0) : fallback);

async function main(): Promise<number> {
  const sizesGiB = numbers(process.env['VMSNAP_BENCH_SIZES_GIB'], [1, 2]);
  const reps = Number(process.env['VMSNAP_BENCH_REPS'] ?? 3);
  const channels = numbers(process.env['VMSNAP_BENCH_CHANNELS'], [4])[0] ?? 4;
  const dir = process.env['VMSNAP_BENCH_DIR'] ?? '/var/tmp/vmsnap-bench';
  fs.mkdirSync(dir, { recursive: true });
  const fsType = execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  const qemu = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  const t0 = Date.now();
  console.log(`vmsnap vs libvirt: ${qemu}; ${dir} (${fsType}); sizes ${sizesGiB.join(',')} GiB; ${channels} channels; ${reps} runs each`);
  const result = await runLibvirtComparison({ dir, sizesGiB, reps, channels, log: (l) => console.log(l) });
  if (!Array.isArray(result)) return 0; // skipped: the reason is printed
  const resultsDir = path.join(packageRoot(), 'bench/results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const out = path.join(resultsDir, 'libvirt.json');
  const report = { date: new Date().toISOString(), qemu, filesystem: fsType, dir, channels, reps, seconds: Math.round((Date.now() - t0) / 1000), rows: result };
  fs.writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  console.log(`wrote ${out}`);
  return result.every((r) => r.verified) ? 0 : 1;
}

process.exit(await main());
