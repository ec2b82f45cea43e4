// `node dist/bench/repository-main.js`: repository upload and download throughput against the
// same S3 server's limit measured with the AWS SDK (bench/repository.ts), then a restore on a
// second node from the repository against the download alone plus a local restore, in the same
// run (bench/repository-restore.ts). Needs `npm run build`.
// Env: VMSNAP_BENCH_REPO_MIB (file size, default 1024), VMSNAP_BENCH_REPO_PARALLELISM (4),
// VMSNAP_BENCH_REPO_REPS (3), VMSNAP_BENCH_REPO_GUEST_MIB (guest RAM of the second-node restore,
// default 1024; 0 skips it; VMSNAP_BENCH_REPO_MIB=0 skips the transfers instead), VMSNAP_BENCH_DIR (default /var/tmp). Writes bench/results/repository.json.
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { runRepositoryBench } from './repository.js';
import { runRemoteRestoreBench } from './repository-restore.js';

const sizeMiB = Number(process.env['VMSNAP_BENCH_REPO_MIB'] ?? 1024);
const parallelism = Number(process.env['VMSNAP_BENCH_REPO_PARALLELISM'] ?? 4);
const reps = Number(process.env['VMSNAP_BENCH_REPO_REPS'] ?? 3);
const guestMiB = Number(process.env['VMSNAP_BENCH_REPO_GUEST_MIB'] ?? 1024);
const t0 = Date.now();
let r: Awaited<ReturnType<typeof runRepositoryBench>> | undefined;
if (sizeMiB > 0) {
  console.log(`repository transfers: ${sizeMiB} MiB of random bytes, parallelism ${parallelism}, best of ${reps}, SeaweedFS on loopback`);
  r = await runRepositoryBench({ sizeMiB, parallelism, reps, log: (l) => console.log(l) });
  console.log(`| direction | vmsnap MiB/s | AWS SDK MiB/s (same file, same server) | ratio | zstd + AES-256-GCM MiB/s |`);
  console.log(`|---|---|---|---|---|`);
  console.log(`| upload | ${r.uploadMiBps} | PutObject ${r.sdkPutObjectMiBps}, lib-storage Upload ${r.sdkUploadMiBps} | ${r.uploadVsServer} | ${r.encryptedUploadMiBps} |`);
  console.log(`| download | ${r.downloadMiBps} | GetObject ${r.sdkGetObjectMiBps} | ${r.downloadVsServer} | ${r.encryptedDownloadMiBps} |`);
}
let remote;
if (guestMiB > 0) {
  console.log(`restore on a second node from the repository: a ${guestMiB} MiB guest, parallelism ${parallelism}, medians of ${reps}`);
  remote = await runRemoteRestoreBench({ guestMiB, parallelism, reps, log: (l) => console.log(l) });
  console.log(`| guest | present pages | restore on node B (fetch + restore) | download alone | local restore on A | B / (download + local) |`);
  console.log(`|---|---|---|---|---|---|`);
  console.log(`| ${remote.guestMiB} MiB (${remote.filledMiB} filled) | ${remote.dataMiB} MiB | ${remote.remoteRestoreMs} ms | ${remote.downloadMs} ms | ${remote.localRestoreMs} ms | ${remote.remoteVsSum} |`);
}
const out = path.join(packageRoot(), 'bench/results/repository.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), seconds: Math.round((Date.now() - t0) / 1000), ...(r ?? {}), ...(remote ? { remoteRestore: remote } : {}) }, null, 2) + '\n');
console.log(`wrote ${out}`);
process.exit(0);
