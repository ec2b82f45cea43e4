// Repository transfer throughput against the same S3 server's own limit, in one run: vmsnap's
// upload (parallel multipart of the file's data extents) and download (parallel ranged reads into
// a sparse file) of a file of random bytes, against the AWS SDK on the same file and server:
// plain PutObject/GetObject (one stream) and lib-storage's Upload (parallel multipart, the SDK's
// own way to send a big file, with the same parallelism). Ratios divide vmsnap's MiB/s by the
// best baseline of each direction. The server is SeaweedFS on loopback (stack/seaweedfs.ts).
import { createReadStream, createWriteStream, mkdtempSync, openSync, closeSync, writeSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { repositoryClient } from '../agent/src/objstore/client.js';
import { downloadSnapshot } from '../agent/src/objstore/download.js';
import { uploadSnapshot, type TransferTarget } from '../agent/src/objstore/upload.js';
import { startSeaweedFS } from '../stack/seaweedfs.js';
import { evictFile } from './baselines.js';

const MiB = 1 << 20;
const BUCKET = 'bench';

export interface RepositoryBenchResult {
  sizeMiB: number;
  parallelism: number;
  reps: number;
  /** Best of `reps`, MiB/s of the file's bytes. */
  uploadMiBps: number;
  downloadMiBps: number;
  sdkPutObjectMiBps: number;
  sdkUploadMiBps: number;
  sdkGetObjectMiBps: number;
  uploadVsServer: number;
  downloadVsServer: number;
  /** The same upload and download with zstd and AES-256-GCM (random bytes do not compress). */
  encryptedUploadMiBps: number;
  encryptedDownloadMiBps: number;
}

async function timed(run: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await run();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export async function runRepositoryBench(opts: { sizeMiB: number; parallelism: number; reps: number; log: (l: string) => void }): Promise<RepositoryBenchResult> {
  const { sizeMiB, parallelism, reps, log } = opts;
  const server = await startSeaweedFS();
  const work = mkdtempSync(path.join(process.env.VMSNAP_BENCH_DIR ?? '/var/tmp', 'vmsnap-repo-bench-'));
  try {
    await server.createBucket(BUCKET);
    const file = path.join(work, 'snap.vms');
    const fd = openSync(file, 'w');
    for (let at = 0; at < sizeMiB * MiB; at += 16 * MiB) writeSync(fd, randomBytes(Math.min(16 * MiB, sizeMiB * MiB - at)), 0, undefined, at);
    closeSync(fd);
    const bytes = statSync(file).size;
    const client = repositoryClient({ endpoint: server.endpoint }, server.credentials);
    const target = (prefix: string, over: Partial<TransferTarget> = {}): TransferTarget => ({ client, bucket: BUCKET, prefix, compression: 'None', parallelism, ...over });
    const key = randomBytes(32);
    const mibps = (ms: number) => bytes / MiB / (ms / 1000);
    const best = { up: 0, down: 0, put: 0, multi: 0, get: 0, encUp: 0, encDown: 0 };
    for (let rep = 1; rep <= reps; rep++) {
      // Each run reads its source from the disk, as an agent reads a snapshot saved earlier.
      const fresh = async () => evictFile(file);
      await fresh();
      best.up = Math.max(best.up, mibps(await timed(() => uploadSnapshot(file, target(`vmsnap/${rep}/`)))));
      await fresh();
      best.put = Math.max(best.put, mibps(await timed(() => client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `sdk/${rep}/put`, Body: createReadStream(file), ContentLength: bytes })))));
      await fresh();
      best.multi = Math.max(
        best.multi,
        mibps(await timed(() => new Upload({ client, params: { Bucket: BUCKET, Key: `sdk/${rep}/multipart`, Body: createReadStream(file) }, queueSize: parallelism, partSize: 16 * MiB }).done())),
      );
      const dest = path.join(work, 'down.vms');
      best.down = Math.max(best.down, mibps(await timed(() => downloadSnapshot(target(`vmsnap/${rep}/`), dest))));
      rmSync(dest, { force: true });
      best.get = Math.max(
        best.get,
        mibps(
          await timed(async () => {
            const res = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `sdk/${rep}/put` }));
            await pipeline(res.Body as Readable, createWriteStream(dest));
          }),
        ),
      );
      rmSync(dest, { force: true });
      await fresh();
      const enc = target(`enc/${rep}/`, { compression: 'Zstd', key });
      best.encUp = Math.max(best.encUp, mibps(await timed(() => uploadSnapshot(file, enc))));
      best.encDown = Math.max(best.encDown, mibps(await timed(() => downloadSnapshot(enc, dest))));
      rmSync(dest, { force: true });
      log(`  rep ${rep}: upload ${best.up.toFixed(0)} (PutObject ${best.put.toFixed(0)}, SDK multipart ${best.multi.toFixed(0)}), download ${best.down.toFixed(0)} (GetObject ${best.get.toFixed(0)}) MiB/s, best so far`);
    }
    const round = (n: number) => Math.round(n * 10) / 10;
    const ratio = (n: number) => Math.round(n * 100) / 100;
    return {
      sizeMiB,
      parallelism,
      reps,
      uploadMiBps: round(best.up),
      downloadMiBps: round(best.down),
      sdkPutObjectMiBps: round(best.put),
      sdkUploadMiBps: round(best.multi),
      sdkGetObjectMiBps: round(best.get),
      uploadVsServer: ratio(best.up / Math.max(best.put, best.multi)),
      downloadVsServer: ratio(best.down / best.get),
      encryptedUploadMiBps: round(best.encUp),
      encryptedDownloadMiBps: round(best.encDown),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
    await server.stop();
  }
}
