// Uploads a complete snapshot file to a repository: only its data extents (SEEK_DATA/SEEK_HOLE),
// cut into parts that are encoded (zstd, AES-256-GCM) and sent as an S3 multipart upload in
// parallel; then the digests sidecar, then the manifest. The manifest goes last: until it exists
// the upload does not count, so an interrupted one is never restored.
import { existsSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadBucketCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Compression } from '../../../api/index.js';
import { native } from '../native.js';
import { digestsPath } from '../snapshot-file/digests.js';
import { encodePart, keyCheck } from './codec.js';
import { MANIFEST_FORMAT, OBJECT_KEYS, partAad, type Manifest, type ManifestPart } from './manifest.js';
import { choosePartBytes, extentsFromFlat, planParts, storedLength, type PartPlan } from './plan.js';
import { runPool } from './pool.js';
import { classifyS3Error, explainS3Error } from './errors.js';
import { signWithPayloadHash } from './client.js';

export interface TransferTarget {
  client: S3Client;
  bucket: string;
  /** The snapshot's key prefix (ends in "/"). */
  prefix: string;
  compression: Compression;
  /** 32 bytes, or absent for no encryption. */
  key?: Buffer;
  parallelism: number;
}

export interface UploadProgress {
  bytesDone: number;
  bytesTotal: number;
}

export interface UploadResult {
  dataBytes: number;
  storedBytes: number;
  parts: number;
  manifest: Manifest;
}

/** HeadBucket first: a missing bucket and refused credentials each get their own clear reason. */
export async function checkBucket(target: Pick<TransferTarget, 'client' | 'bucket'>, signal?: AbortSignal): Promise<void> {
  try {
    await target.client.send(new HeadBucketCommand({ Bucket: target.bucket }), { abortSignal: signal });
  } catch (err) {
    // HeadBucket has no body to carry a code: its 404 is the bucket's.
    const notFound = classifyS3Error(err).kind === 'notFound';
    throw explainS3Error(notFound ? Object.assign(new Error('no such bucket', { cause: err }), { name: 'NoSuchBucket' }) : err, `checking bucket ${target.bucket}`);
  }
}

export async function uploadSnapshot(
  file: string,
  target: TransferTarget,
  opts: { partBytes?: number; onProgress?: (p: UploadProgress) => void; signal?: AbortSignal } = {},
): Promise<UploadResult> {
  const fh = await open(file, 'r');
  const where = `s3 bucket ${target.bucket} at ${target.prefix}`;
  try {
    const fileSize = (await fh.stat()).size;
    const extents = extentsFromFlat(native().dataExtents(fh.fd), fileSize);
    const dataBytes = extents.reduce((n, e) => n + e.length, 0);
    const plan = planParts(extents, opts.partBytes ?? choosePartBytes(dataBytes));
    const dataKey = target.prefix + OBJECT_KEYS.data;
    await checkBucket(target, opts.signal);
    const created = await target.client
      .send(new CreateMultipartUploadCommand({ Bucket: target.bucket, Key: dataKey }), { abortSignal: opts.signal })
      .catch((err) => {
        throw explainS3Error(err, `starting the upload to ${where}`);
      });
    const uploadId = created.UploadId!;
    const done: ManifestPart[] = [];
    const etags = new Map<number, string | undefined>();
    let bytesDone = 0;
    try {
      await runPool(plan, target.parallelism, async (part: PartPlan) => {
        const plain = Buffer.allocUnsafe(part.bytes);
        let at = 0;
        for (const seg of part.segments) {
          const { bytesRead } = await fh.read(plain, at, seg.length, seg.offset);
          if (bytesRead !== seg.length) throw new Error(`${file}: short read at ${seg.offset} (the file changed during the upload)`);
          at += seg.length;
        }
        const enc = await encodePart(plain, { compression: target.compression, key: target.key, aad: partAad(target.prefix, part.number) });
        const isLast = part.number === plan.length;
        const stored = storedLength(enc.data.length, isLast);
        const body = stored === enc.data.length ? enc.data : Buffer.concat([enc.data, Buffer.alloc(stored - enc.data.length)]);
        const send = new UploadPartCommand({ Bucket: target.bucket, Key: dataKey, UploadId: uploadId, PartNumber: part.number, Body: body });
        // A part sent as it is read is signed with the SHA-256 the manifest records anyway, so
        // its bytes are hashed once, not twice (the SDK would hash the body again to sign it).
        if (body === plain) signWithPayloadHash(send, enc.sha256);
        const res = await target.client
          .send(send, { abortSignal: opts.signal })
          .catch((err) => {
            throw explainS3Error(err, `uploading part ${part.number} to ${where}`);
          });
        done.push({
          number: part.number,
          segments: part.segments,
          plainBytes: part.bytes,
          encodedBytes: enc.data.length,
          storedBytes: stored,
          sha256: enc.sha256,
          ...(enc.nonce ? { nonce: enc.nonce } : {}),
        });
        etags.set(part.number, res.ETag);
        bytesDone += part.bytes;
        opts.onProgress?.({ bytesDone, bytesTotal: dataBytes });
      });
      done.sort((a, b) => a.number - b.number);
      await target.client
        .send(
          new CompleteMultipartUploadCommand({
            Bucket: target.bucket,
            Key: dataKey,
            UploadId: uploadId,
            MultipartUpload: { Parts: done.map((p) => ({ PartNumber: p.number, ETag: etags.get(p.number) })) },
          }),
          { abortSignal: opts.signal },
        )
        .catch((err) => {
          throw explainS3Error(err, `completing the upload to ${where}`);
        });
    } catch (err) {
      await target.client.send(new AbortMultipartUploadCommand({ Bucket: target.bucket, Key: dataKey, UploadId: uploadId })).catch(() => undefined);
      throw err;
    }
    const sidecar = digestsPath(file);
    const hasDigests = existsSync(sidecar);
    if (hasDigests) {
      await target.client
        .send(new PutObjectCommand({ Bucket: target.bucket, Key: target.prefix + OBJECT_KEYS.digests, Body: await readFile(sidecar) }), { abortSignal: opts.signal })
        .catch((err) => {
          throw explainS3Error(err, `uploading the digests to ${where}`);
        });
    }
    const parts = done;
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      fileSize,
      dataBytes,
      storedBytes: parts.reduce((n, p) => n + p.storedBytes, 0),
      compression: target.compression,
      ...(target.key ? { keyCheck: keyCheck(target.key) } : {}),
      digests: hasDigests,
      parts,
    };
    await target.client
      .send(
        new PutObjectCommand({ Bucket: target.bucket, Key: target.prefix + OBJECT_KEYS.manifest, Body: JSON.stringify(manifest), ContentType: 'application/json' }),
        { abortSignal: opts.signal },
      )
      .catch((err) => {
        throw explainS3Error(err, `writing the manifest to ${where}`);
      });
    return { dataBytes, storedBytes: manifest.storedBytes, parts: parts.length, manifest };
  } finally {
    await fh.close();
  }
}
