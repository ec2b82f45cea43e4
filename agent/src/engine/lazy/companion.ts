// The stream a lazy restore feeds to migrate-incoming: the snapshot's own
// mapped-ram stream at the same offsets, minus the main RAM block's pages,
// with that block's bitmap left zero. QEMU then loads device state and the
// small blocks (firmware, ROMs, VGA, ACPI tables) and never writes the main
// block, which is mapped from the snapshot instead. A sparse file of the same
// logical size, unlinked as soon as it is open: QEMU reads it through the
// fd we pass, and nothing is left behind whatever happens next.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { structureRanges, type RamBlockInfo } from '../../snapshot-file/mapped-ram.js';
import type { VerifiedSnapshot } from '../../snapshot-file/verify.js';
import { bitmapBytes, presentPageRanges, type FileRange } from './page-runs.js';

const CHUNK = 256 << 10;
const ZEROS = Buffer.alloc(CHUNK);

export interface CompanionStream {
  /** Read-only fd of the (already unlinked) companion file. */
  fd: number;
  /** Bytes written into it (what QEMU will load besides the mapped block). */
  bytesWritten: number;
  /** Bytes of the small blocks' pages in it. */
  pageBytes: number;
}

/** Removes [cut.offset, cut.offset + cut.length) from the ranges. */
function subtract(ranges: FileRange[], cut: FileRange): FileRange[] {
  const end = cut.offset + cut.length;
  return ranges.flatMap((r) => {
    const rEnd = r.offset + r.length;
    if (rEnd <= cut.offset || r.offset >= end) return [r];
    const parts: FileRange[] = [];
    if (r.offset < cut.offset) parts.push({ offset: r.offset, length: cut.offset - r.offset });
    if (rEnd > end) parts.push({ offset: end, length: rEnd - end });
    return parts;
  });
}

/** Creates and unlinks a scratch file, next to the snapshot when that directory is writable. */
function openScratch(snapshotPath: string): { rw: number; ro: number } {
  const name = `.${path.basename(snapshotPath)}.lazy-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  for (const dir of [path.dirname(path.resolve(snapshotPath)), os.tmpdir()]) {
    const file = path.join(dir, name);
    let rw: number;
    try {
      rw = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') continue;
      throw err;
    }
    try {
      const ro = fs.openSync(file, fs.constants.O_RDONLY);
      return { rw, ro };
    } finally {
      fs.rmSync(file, { force: true });
    }
  }
  throw new Error(`no writable directory for the lazy restore's companion stream (tried the snapshot's directory and ${os.tmpdir()})`);
}

/** Copies the ranges, skipping all-zero chunks (they stay holes and read as zeros). */
function copyRanges(src: number, dst: number, ranges: FileRange[]): number {
  const buf = Buffer.alloc(CHUNK);
  let written = 0;
  for (const r of ranges) {
    for (let pos = r.offset; pos < r.offset + r.length; ) {
      const want = Math.min(CHUNK, r.offset + r.length - pos);
      const n = fs.readSync(src, buf, 0, want, pos);
      if (n <= 0) throw new Error(`the snapshot ended at offset ${pos} while building the companion stream`);
      const chunk = buf.subarray(0, n);
      if (!chunk.equals(ZEROS.subarray(0, n))) written += fs.writeSync(dst, chunk, 0, n, pos);
      pos += n;
    }
  }
  return written;
}

export function buildCompanionStream(snapshotPath: string, snapshot: VerifiedSnapshot, main: RamBlockInfo): CompanionStream {
  const { layout, fileSize } = snapshot;
  const src = fs.openSync(snapshotPath, 'r');
  let scratch: { rw: number; ro: number } | undefined;
  try {
    scratch = openScratch(snapshotPath);
    fs.ftruncateSync(scratch.rw, fileSize);
    const all = structureRanges(layout, snapshot.header.streamOffset, fileSize).map(([from, to]) => ({ offset: from, length: to - from }));
    const structure = subtract(all, {
      offset: main.bitmapOffset,
      length: bitmapBytes(main),
    });
    const smallPages = layout.blocks.filter((b) => b.id !== main.id).flatMap((b) => presentPageRanges(src, b));
    const pageBytes = smallPages.reduce((s, r) => s + r.length, 0);
    const bytesWritten = copyRanges(src, scratch.rw, [...structure, ...smallPages]);
    fs.closeSync(scratch.rw);
    return { fd: scratch.ro, bytesWritten, pageBytes };
  } catch (err) {
    if (scratch) {
      fs.closeSync(scratch.rw);
      fs.closeSync(scratch.ro);
    }
    throw err;
  } finally {
    fs.closeSync(src);
  }
}
