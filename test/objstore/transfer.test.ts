// Upload and download against a real S3 server (SeaweedFS): sparse extents only, parallel parts,
// zstd, AES-256-GCM, per-part digests, and the failures a repository meets.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CreateMultipartUploadCommand, GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { repositoryClient, signWithPayloadHash } from '../../agent/src/objstore/client.js';
import { sha256Hex } from '../../agent/src/objstore/codec.js';
import { downloadSnapshot, readManifest } from '../../agent/src/objstore/download.js';
import { removeUploadedSnapshot } from '../../agent/src/objstore/remove.js';
import { uploadSnapshot, type TransferTarget } from '../../agent/src/objstore/upload.js';
import { objectRanges } from '../../agent/src/objstore/plan.js';
import { startSeaweedFS, type S3Server } from '../../stack/seaweedfs.js';

const MiB = 1 << 20;
const BUCKET = 'snapshots';
let server: S3Server;
let work: string;
let source: string;
let seq = 0;

/** A sparse 512 MiB file: random pages, compressible pages and long holes, plus a digests sidecar. */
function makeSparseFile(file: string): void {
  const fd = openSync(file, 'w');
  writeSync(fd, randomBytes(MiB), 0, MiB, 0);
  writeSync(fd, Buffer.alloc(20 * MiB, 0x5a), 0, 20 * MiB, 64 * MiB);
  writeSync(fd, randomBytes(24 * MiB), 0, 24 * MiB, 100 * MiB);
  writeSync(fd, randomBytes(4096), 0, 4096, 300 * MiB + 8192);
  writeSync(fd, Buffer.from('tail'), 0, 4, 512 * MiB - 4);
  closeSync(fd);
  writeFileSync(`${file}.digests`, JSON.stringify({ fake: 'digests sidecar' }));
}

function target(over: Partial<TransferTarget> = {}): TransferTarget {
  return {
    client: repositoryClient({ endpoint: server.endpoint }, server.credentials),
    bucket: BUCKET,
    prefix: `t/${++seq}/`,
    compression: 'None',
    parallelism: 4,
    ...over,
  };
}

function sameBytes(a: string, b: string): void {
  const x = readFileSync(a);
  const y = readFileSync(b);
  expect(y.length).toBe(x.length);
  expect(Buffer.compare(x, y)).toBe(0);
}

beforeAll(async () => {
  server = await startSeaweedFS();
  await server.createBucket(BUCKET);
  work = mkdtempSync(path.join(os.tmpdir(), 'vmsnap-objstore-'));
  source = path.join(work, 'snap.vmsnap');
  makeSparseFile(source);
}, 900_000);

afterAll(async () => {
  await server?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('upload and download', () => {
  it('carries only the present pages, in parallel parts, and restores a sparse identical file', async () => {
    const t = target();
    const seen: number[] = [];
    const up = await uploadSnapshot(source, t, { partBytes: 8 * MiB, onProgress: (p) => seen.push(p.bytesDone) });
    // 1 + 20 + 24 MiB + 4 KiB + the 4-byte tail's page: far below the 512 MiB logical size.
    expect(up.dataBytes).toBeLessThan(50 * MiB);
    expect(up.dataBytes).toBeGreaterThanOrEqual(45 * MiB + 4096);
    expect(up.parts).toBeGreaterThan(1);
    expect(seen[seen.length - 1]).toBe(up.dataBytes);
    const dest = path.join(work, 'plain.vmsnap');
    await downloadSnapshot(t, dest);
    sameBytes(source, dest);
    expect(statSync(dest).blocks * 512).toBeLessThan(64 * MiB); // still sparse
    expect(readFileSync(`${dest}.digests`, 'utf8')).toBe(readFileSync(`${source}.digests`, 'utf8'));
    expect(existsSync(`${dest}.partial`)).toBe(false);
  });

  it('zstd shrinks the stored object and AES-256-GCM makes it noise without the key', async () => {
    const key = randomBytes(32);
    const t = target({ compression: 'Zstd', key });
    const up = await uploadSnapshot(source, t, { partBytes: 8 * MiB });
    expect(up.storedBytes).toBeLessThan(up.dataBytes);
    const raw = await t.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${t.prefix}data` }));
    const stored = Buffer.from(await raw.Body!.transformToByteArray());
    // The 20 MiB run of 0x5a is gone: no 4 KiB of it appears anywhere in the object.
    expect(stored.indexOf(Buffer.alloc(4096, 0x5a))).toBe(-1);
    const dest = path.join(work, 'enc.vmsnap');
    await downloadSnapshot(t, dest);
    sameBytes(source, dest);

    // A wrong key and a missing key are refused before any part is fetched.
    await expect(downloadSnapshot({ ...t, key: randomBytes(32) }, path.join(work, 'wrong.vmsnap'))).rejects.toThrow(/encrypted with another key/);
    await expect(downloadSnapshot({ ...t, key: undefined }, path.join(work, 'nokey.vmsnap'))).rejects.toThrow(/needs encryptionKeySecret/);
    expect(existsSync(path.join(work, 'wrong.vmsnap'))).toBe(false);
  });
});

describe('the signature of a part', () => {
  it('carries the SHA-256 the manifest records: a body that does not match it is refused by the server', async () => {
    const t = target();
    const { UploadId } = await t.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: `${t.prefix}data` }));
    const body = randomBytes(6 * MiB);
    const part = (number: number, sha256: string) => {
      const cmd = new UploadPartCommand({ Bucket: BUCKET, Key: `${t.prefix}data`, UploadId, PartNumber: number, Body: body });
      signWithPayloadHash(cmd, sha256);
      return t.client.send(cmd);
    };
    await expect(part(1, sha256Hex(body))).resolves.toMatchObject({ ETag: expect.any(String) });
    await expect(part(2, sha256Hex(Buffer.from('another body')))).rejects.toMatchObject({ name: 'XAmzContentSHA256Mismatch' });
  });
});

describe('a flipped byte in the stored object', () => {
  for (const mode of ['clear', 'encrypted'] as const) {
    it(`is refused, naming the part and its file bytes (${mode})`, async () => {
      const t = target(mode === 'encrypted' ? { key: randomBytes(32), compression: 'Zstd' } : {});
      await uploadSnapshot(source, t, { partBytes: 8 * MiB });
      const manifest = await readManifest(t);
      const victim = objectRanges(manifest.parts)[2]!;
      const raw = await t.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${t.prefix}data` }));
      const bytes = Buffer.from(await raw.Body!.transformToByteArray());
      bytes[victim.start + Math.floor(victim.length / 2)]! ^= 0x01;
      await t.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${t.prefix}data`, Body: bytes }));
      const dest = path.join(work, `flipped-${mode}.vmsnap`);
      const seg = manifest.parts[2]!.segments[0]!;
      await expect(downloadSnapshot(t, dest)).rejects.toThrow(new RegExp(`part 3 \\(file bytes ${seg.offset}\\.\\.`));
      expect(existsSync(dest)).toBe(false);
      expect(existsSync(`${dest}.partial`)).toBe(false);
    });
  }
});

describe('repository errors', () => {
  it('wrong credentials say so', async () => {
    const t = target({ client: repositoryClient({ endpoint: server.endpoint }, { ...server.credentials, secretAccessKey: 'wrong' + server.credentials.secretAccessKey }) });
    await expect(uploadSnapshot(source, t)).rejects.toThrow(/refused the credentials/);
  });

  it('a missing bucket says so', async () => {
    await expect(uploadSnapshot(source, target({ bucket: 'no-such-bucket' }))).rejects.toThrow(/bucket does not exist/);
  });

  it('a download with wrong credentials or from a missing bucket says so and leaves no file', async () => {
    const t = target();
    await uploadSnapshot(source, t, { partBytes: 8 * MiB });
    const dest = path.join(work, 'refused.vmsnap');
    const wrong = repositoryClient({ endpoint: server.endpoint }, { ...server.credentials, secretAccessKey: 'wrong' + server.credentials.secretAccessKey });
    await expect(downloadSnapshot({ ...t, client: wrong }, dest)).rejects.toThrow(/reading the manifest of .*: the repository refused the credentials/);
    await expect(downloadSnapshot({ ...t, bucket: 'no-such-bucket' }, dest)).rejects.toThrow(/reading the manifest of .*: the bucket does not exist/);
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(`${dest}.partial`)).toBe(false);
  });

  it('a server killed mid-upload fails the upload and leaves nothing restorable; a retry succeeds', async () => {
    const t = target({ client: repositoryClient({ endpoint: server.endpoint }, server.credentials, { maxAttempts: 1 }), parallelism: 1 });
    let killed: Promise<void> | undefined;
    await expect(
      uploadSnapshot(source, t, {
        partBytes: 8 * MiB,
        onProgress: () => {
          killed ??= server.kill();
        },
      }),
    ).rejects.toThrow(/unreachable|dropped|uploading part|completing/);
    await killed;
    await server.start();
    await expect(readManifest(t)).rejects.toThrow(/no manifest/);
    await expect(downloadSnapshot(t, path.join(work, 'half.vmsnap'))).rejects.toThrow(/no manifest/);
    await uploadSnapshot(source, t, { partBytes: 8 * MiB });
    const dest = path.join(work, 'retried.vmsnap');
    await downloadSnapshot(t, dest);
    sameBytes(source, dest);
  });

  it('a server killed mid-download fails the download and leaves no file', async () => {
    const t = target({ client: repositoryClient({ endpoint: server.endpoint }, server.credentials, { maxAttempts: 1 }), parallelism: 1 });
    await uploadSnapshot(source, t, { partBytes: 8 * MiB });
    const dest = path.join(work, 'killed-dl.vmsnap');
    let killed: Promise<void> | undefined;
    await expect(
      downloadSnapshot(t, dest, {
        onProgress: () => {
          killed ??= server.kill();
        },
      }),
    ).rejects.toThrow(/unreachable|dropped|downloading/);
    await killed;
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(`${dest}.partial`)).toBe(false);
    await server.start();
    await downloadSnapshot(t, dest);
    sameBytes(source, dest);
    const listed = await t.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: t.prefix }));
    expect(listed.Contents?.map((c) => c.Key?.slice(t.prefix.length)).sort()).toEqual(['data', 'digests', 'manifest.json']);
  });
});

describe('removing an uploaded snapshot', () => {
  it('removes its objects and an unfinished multipart upload under its prefix; removing again is fine', async () => {
    const t = target();
    await uploadSnapshot(source, t, { partBytes: 8 * MiB });
    const stray = await t.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: `${t.prefix}data` }));
    await removeUploadedSnapshot(t);
    const listed = await t.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: t.prefix }));
    expect(listed.Contents ?? []).toEqual([]);
    const pending = await t.client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: t.prefix }));
    expect((pending.Uploads ?? []).map((u) => u.UploadId)).not.toContain(stray.UploadId);
    await expect(readManifest(t)).rejects.toThrow(/manifest/);
    await removeUploadedSnapshot(t);
  });
});
