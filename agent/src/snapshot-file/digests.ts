// Digests of the RAM pages, for the optional verification mode. The header's
// CRC and the structure checksum cover everything but the RAM pages (a full
// read of them would double the save's disk time); these digests cover the
// pages, per 64 MiB region of each RAM block, only the pages present.
//
// They are computed after the save, once the VM is resumed and the file is
// complete and durable, so neither the VM's pause nor the reported save time
// grows. They live in a sidecar (<file>.digests, written atomically) because
// a complete snapshot file is never rewritten: rewriting its header could
// lose a good snapshot to a crash. The sidecar names the snapshot it belongs
// to (completion time, end offset, structure checksum), so a stale one is refused.
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { SnapshotFileError, type SnapshotHeader } from './header.js';
import { readMappedRamLayout, type MappedRamLayout, type RamBlockInfo } from './mapped-ram.js';
import type { DigestAlgorithm, SnapshotDigests } from './metadata.js';
import { native } from '../native.js';

export const DIGEST_REGION_BYTES = 64 << 20;
/** sha256: collision resistant (also catches deliberate edits), hardware-accelerated (SHA-NI) on current x86-64. */
export const DEFAULT_DIGEST_ALGORITHM: DigestAlgorithm = 'sha256';

export function digestsPath(snapshotPath: string): string {
  return `${snapshotPath}.digests`;
}

interface Hasher {
  update(b: Buffer): void;
  digest(): string;
}

function hasher(algorithm: DigestAlgorithm): Hasher {
  if (algorithm === 'sha256') {
    const h = createHash('sha256');
    return { update: (b) => h.update(b), digest: () => h.digest('hex') };
  }
  let c = 0;
  return { update: (b) => (c = crc32(b, c)), digest: () => c.toString(16).padStart(8, '0') };
}

/** Reads go in windows of this size; windows without a present page are skipped (holes cost nothing). */
const WINDOW_BYTES = 8 << 20;

/**
 * Hashes one block's present pages region by region, calling `onRegion(index, digest)`;
 * returns the bytes hashed. The next window is read while this one is hashed, so the
 * pass runs at about the slower of the disk and the hash, not their sum.
 */
export async function digestBlock(
  file: fs.promises.FileHandle,
  block: RamBlockInfo,
  algorithm: DigestAlgorithm,
  regionBytes: number,
  onRegion: (i: number, d: string) => void,
): Promise<number> {
  const bitmap = Buffer.alloc(Math.ceil(block.pages / 64) * 8);
  if ((await file.read(bitmap, 0, bitmap.length, block.bitmapOffset)).bytesRead < bitmap.length) {
    throw new SnapshotFileError(`RAM block ${block.id}: its bitmap is truncated`);
  }
  const present = (page: number) => (bitmap[page >> 3]! >> (page & 7)) & 1;
  const pagesPerRegion = Math.max(1, Math.floor(regionBytes / block.pageSize));
  const pagesPerWindow = Math.max(1, Math.min(pagesPerRegion, Math.floor(WINDOW_BYTES / block.pageSize)));
  // The windows that hold a present page, in order; a window never spans two regions.
  const windows: Array<{ region: number; first: number; end: number }> = [];
  const regions = Math.ceil(block.pages / pagesPerRegion);
  for (let region = 0; region < regions; region++) {
    const regionEnd = Math.min(block.pages, (region + 1) * pagesPerRegion);
    for (let first = region * pagesPerRegion; first < regionEnd; first += pagesPerWindow) {
      const end = Math.min(regionEnd, first + pagesPerWindow);
      for (let p = first; p < end; p++) {
        if (present(p)) {
          windows.push({ region, first, end });
          break;
        }
      }
    }
  }
  const buffers = [Buffer.allocUnsafe(pagesPerWindow * block.pageSize), Buffer.allocUnsafe(pagesPerWindow * block.pageSize)];
  const read = async (i: number): Promise<Buffer> => {
    const w = windows[i]!;
    const from = w.first * block.pageSize;
    const length = Math.min(w.end * block.pageSize, block.usedLength) - from; // the last page may be partial
    const buf = buffers[i % 2]!;
    const { bytesRead } = await file.read(buf, 0, length, block.pagesOffset + from);
    if (bytesRead < length) throw new SnapshotFileError(`RAM block ${block.id} is truncated at offset ${from + bytesRead}`);
    return buf.subarray(0, length);
  };
  let hashed = 0;
  let region = 0;
  let h = hasher(algorithm);
  let next = windows.length > 0 ? read(0) : undefined;
  for (let i = 0; i < windows.length; i++) {
    const data = await next!;
    next = i + 1 < windows.length ? read(i + 1) : undefined;
    next?.catch(() => undefined); // awaited on the next turn; do not let it go unhandled if this one throws
    const w = windows[i]!;
    for (; region < w.region; region++, h = hasher(algorithm)) onRegion(region, h.digest());
    for (let p = w.first; p < w.end; ) {
      if (!present(p)) {
        p++;
        continue;
      }
      let run = p;
      while (run < w.end && present(run)) run++;
      const chunk = data.subarray((p - w.first) * block.pageSize, Math.min((run - w.first) * block.pageSize, data.length));
      h.update(chunk);
      hashed += chunk.length;
      p = run;
    }
  }
  for (; region < regions; region++, h = hasher(algorithm)) onRegion(region, h.digest());
  return hashed;
}

/**
 * Closes a snapshot file after a pass over all its pages, dropping them from the page cache: the
 * files stay out of the node's memory (as their O_DIRECT saves and loads keep them), and QEMU's
 * O_DIRECT load of a file whose pages are cached runs several times slower
 * (docs/benchmarks.md, the restore on a second node). The pages are clean: only read.
 */
export async function closeOutOfPageCache(file: fs.promises.FileHandle): Promise<void> {
  try {
    native().fadviseDontNeed(file.fd, 0, 0);
  } finally {
    await file.close();
  }
}

/** Computes the digests of a complete snapshot file. */
export async function computeDigests(
  path: string,
  header: SnapshotHeader,
  opts: { algorithm?: DigestAlgorithm; layout?: MappedRamLayout } = {},
): Promise<SnapshotDigests> {
  const { stream, completedAt } = header.metadata;
  if (header.state !== 'complete' || !completedAt || stream.endOffset === undefined || stream.structureCrc32 === undefined) {
    throw new SnapshotFileError(`${path} is not a complete snapshot: digests are computed only after a save finished`);
  }
  const started = Date.now();
  const algorithm = opts.algorithm ?? DEFAULT_DIGEST_ALGORITHM;
  const layout = opts.layout ?? readMappedRamLayout(path, header.streamOffset, { countPages: false });
  const file = await fs.promises.open(path, 'r');
  let bytesHashed = 0;
  try {
    const blocks: SnapshotDigests['blocks'] = [];
    for (const b of layout.blocks) {
      const regions: string[] = [];
      bytesHashed += await digestBlock(file, b, algorithm, DIGEST_REGION_BYTES, (_i, d) => regions.push(d));
      blocks.push({ id: b.id, usedLength: b.usedLength, regions });
    }
    return {
      formatVersion: 1,
      algorithm,
      regionBytes: DIGEST_REGION_BYTES,
      snapshot: { completedAt, endOffset: stream.endOffset, structureCrc32: stream.structureCrc32 },
      blocks,
      stats: { durationMs: Date.now() - started, bytesHashed },
    };
  } finally {
    await closeOutOfPageCache(file);
  }
}

/** Computes the digests and writes the sidecar atomically (temp file, fsync, rename, fsync of the directory). */
export async function writeDigests(path: string, header: SnapshotHeader, opts: { algorithm?: DigestAlgorithm } = {}): Promise<SnapshotDigests> {
  const digests = await computeDigests(path, header, opts);
  const target = digestsPath(path);
  const tmp = `${target}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify(digests));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, target);
  const dir = fs.openSync(target.slice(0, target.lastIndexOf('/')) || '/', 'r');
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
  return digests;
}
