// Fetches an uploaded snapshot into a local sparse file: the manifest first (no manifest, no
// restore), a wrong encryption key refused before any part is read, then parallel ranged reads,
// each part decrypted, decompressed and checked against its SHA-256 before its bytes are written
// at their file offsets. The file appears under its final name only once every part checked out
// and it was synced, so a failed or interrupted download never leaves a file that looks usable.
import { open, rename, rm, writeFile } from 'node:fs/promises';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { digestsPath } from '../snapshot-file/digests.js';
import { decodePart, keyCheck } from './codec.js';
import { explainS3Error } from './errors.js';
import { ManifestSchema, OBJECT_KEYS, partAad, type Manifest, type ManifestPart } from './manifest.js';
import { describePart, objectRanges, rangeHeader } from './plan.js';
import { runPool } from './pool.js';
import type { TransferTarget, UploadProgress } from './upload.js';

export type DownloadSource = Omit<TransferTarget, 'compression'>;

async function getBytes(src: DownloadSource, key: string, range: string | undefined, doing: string, signal?: AbortSignal): Promise<Buffer> {
  try {
    const res = await src.client.send(new GetObjectCommand({ Bucket: src.bucket, Key: key, Range: range }), { abortSignal: signal });
    const bytes = await res.Body!.transformToByteArray();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength); // a view, not a copy
  } catch (err) {
    throw explainS3Error(err, doing);
  }
}

export async function readManifest(src: DownloadSource, signal?: AbortSignal): Promise<Manifest> {
  const where = `s3 bucket ${src.bucket} at ${src.prefix}`;
  const raw = await getBytes(src, src.prefix + OBJECT_KEYS.manifest, undefined, `reading the manifest of ${where} (no manifest: the upload never completed)`, signal);
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new Error(`the manifest of ${where} is not JSON`);
  }
  const parsed = ManifestSchema.safeParse(json);
  if (!parsed.success) throw new Error(`the manifest of ${where} is not a vmsnap manifest: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/** Refuses a missing or wrong key before any part is fetched. */
export function checkKey(manifest: Manifest, key: Buffer | undefined, where: string): void {
  if (manifest.keyCheck && !key) throw new Error(`${where} is encrypted: the repository needs encryptionKeySecret`);
  if (manifest.keyCheck && key && keyCheck(key) !== manifest.keyCheck) {
    throw new Error(`${where} was encrypted with another key: the repository's encryptionKeySecret holds the wrong key`);
  }
}

export async function downloadSnapshot(
  src: DownloadSource,
  dest: string,
  opts: {
    onProgress?: (p: UploadProgress) => void;
    signal?: AbortSignal;
    /** Each part's plaintext once it checked out, before it is written (the caller may read, not keep, it). */
    onPart?: (part: ManifestPart, plain: Buffer) => void;
  } = {},
): Promise<Manifest> {
  const where = `s3 bucket ${src.bucket} at ${src.prefix}`;
  const manifest = await readManifest(src, opts.signal);
  checkKey(manifest, src.key, where);
  const partial = `${dest}.partial`;
  const fh = await open(partial, 'w', 0o600);
  let bytesDone = 0;
  try {
    await fh.truncate(manifest.fileSize); // sparse: only the parts' extents get written
    const ranges = new Map(objectRanges(manifest.parts).map((r) => [r.number, r]));
    await runPool(manifest.parts, src.parallelism, async (part) => {
      const what = `${where}: ${describePart(part)}`;
      const stored = await getBytes(src, src.prefix + OBJECT_KEYS.data, rangeHeader(ranges.get(part.number)!), `downloading ${what}`, opts.signal);
      const plain = await decodePart(stored, {
        compression: manifest.compression,
        key: src.key,
        aad: partAad(src.prefix, part.number),
        nonce: part.nonce,
        sha256: part.sha256,
        plainBytes: part.plainBytes,
        what,
      });
      opts.onPart?.(part, plain);
      let at = 0;
      for (const seg of part.segments) {
        await fh.write(plain, at, seg.length, seg.offset);
        at += seg.length;
      }
      // Write-behind: the part goes to the disk while the other workers fetch, so the final sync
      // has little left to do instead of writing the whole file after the last byte arrived.
      await fh.datasync();
      bytesDone += part.plainBytes;
      opts.onProgress?.({ bytesDone, bytesTotal: manifest.dataBytes });
    });
    if (manifest.digests) {
      const digests = await getBytes(src, src.prefix + OBJECT_KEYS.digests, undefined, `downloading the digests of ${where}`, opts.signal);
      await writeFile(digestsPath(dest), digests, { mode: 0o600 });
    }
    await fh.sync();
    await fh.close();
    await rename(partial, dest);
    return manifest;
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(partial, { force: true });
    await rm(digestsPath(dest), { force: true });
    throw err;
  }
}
