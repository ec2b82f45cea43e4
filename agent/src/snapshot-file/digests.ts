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

export const READ_CHUNK = 8 << 20;

/**
 * Hashes one block's present pages region by region, calling `onRegion(index, digest)`.
 * Runs of present pages are read in large chunks; absent pages (holes) are skipped.
 */
export function digestBlock(fd: number, block: RamBlockInfo, algorithm: DigestAlgorithm, regionBytes: number, buf: Buffer, onRegion: (i: number, d: string) => void): number {
  const bitmap = Buffer.alloc(Math.ceil(block.pages / 64) * 8);
  if (fs.readSync(fd, bitmap, 0, bitmap.length, block.bitmapOffset) < bitmap.length) {
    throw new SnapshotFileError(`RAM block ${block.id}: its bitmap is truncated`);
  }
  const present = (page: number) => (bitmap[page >> 3]! >> (page & 7)) & 1;
  const pagesPerRegion = Math.max(1, Math.floor(regionBytes / block.pageSize));
  let hashed = 0;
  for (let region = 0, first = 0; first < block.pages; region++, first += pagesPerRegion) {
    const h = hasher(algorithm);
    const end = Math.min(block.pages, first + pagesPerRegion);
    for (let page = first; page < end; ) {
      if (!present(page)) {
        page++;
        continue;
      }
      let run = page;
      while (run < end && present(run)) run++;
      // The last page of a block may be partial.
      const from = page * block.pageSize;
      const to = Math.min(run * block.pageSize, block.usedLength);
      for (let pos = from; pos < to; ) {
        const want = Math.min(buf.length, to - pos);
        const n = fs.readSync(fd, buf, 0, want, block.pagesOffset + pos);
        if (n < want) throw new SnapshotFileError(`RAM block ${block.id} is truncated at offset ${pos + n}`);
        h.update(buf.subarray(0, n));
        pos += n;
        hashed += n;
      }
      page = run;
    }
    onRegion(region, h.digest());
  }
  return hashed;
}

/** Computes the digests of a complete snapshot file. */
export function computeDigests(path: string, header: SnapshotHeader, opts: { algorithm?: DigestAlgorithm; layout?: MappedRamLayout } = {}): SnapshotDigests {
  const { stream, completedAt } = header.metadata;
  if (header.state !== 'complete' || !completedAt || stream.endOffset === undefined || stream.structureCrc32 === undefined) {
    throw new SnapshotFileError(`${path} is not a complete snapshot: digests are computed only after a save finished`);
  }
  const started = Date.now();
  const algorithm = opts.algorithm ?? DEFAULT_DIGEST_ALGORITHM;
  const layout = opts.layout ?? readMappedRamLayout(path, header.streamOffset, { countPages: false });
  const fd = fs.openSync(path, 'r');
  const buf = Buffer.allocUnsafe(READ_CHUNK);
  let bytesHashed = 0;
  try {
    const blocks = layout.blocks.map((b) => {
      const regions: string[] = [];
      bytesHashed += digestBlock(fd, b, algorithm, DIGEST_REGION_BYTES, buf, (_i, d) => regions.push(d));
      return { id: b.id, usedLength: b.usedLength, regions };
    });
    return {
      formatVersion: 1,
      algorithm,
      regionBytes: DIGEST_REGION_BYTES,
      snapshot: { completedAt, endOffset: stream.endOffset, structureCrc32: stream.structureCrc32 },
      blocks,
      stats: { durationMs: Date.now() - started, bytesHashed },
    };
  } finally {
    fs.closeSync(fd);
  }
}

/** Computes the digests and writes the sidecar atomically (temp file, fsync, rename, fsync of the directory). */
export function writeDigests(path: string, header: SnapshotHeader, opts: { algorithm?: DigestAlgorithm } = {}): SnapshotDigests {
  const digests = computeDigests(path, header, opts);
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
