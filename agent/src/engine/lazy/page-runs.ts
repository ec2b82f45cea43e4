// Runs of pages present in a RAM block, from its mapped-ram bitmap
// (little-endian 64-bit words): what the companion stream copies for the small
// blocks and what the prefetch reads ahead for the main one.
import fs from 'node:fs';
import type { RamBlockInfo } from '../../snapshot-file/mapped-ram.js';

/** A byte range of the file: [offset, offset + length). */
export interface FileRange {
  offset: number;
  length: number;
}

export function bitmapBytes(block: Pick<RamBlockInfo, 'pages'>): number {
  return Math.ceil(block.pages / 64) * 8;
}

/** The file ranges holding the block's present pages, in address order. */
export function presentPageRanges(fd: number, block: RamBlockInfo): FileRange[] {
  const bitmap = Buffer.alloc(bitmapBytes(block));
  const n = fs.readSync(fd, bitmap, 0, bitmap.length, block.bitmapOffset);
  if (n < bitmap.length) throw new Error(`RAM block ${block.id}: bitmap is truncated`);
  const ranges: FileRange[] = [];
  let runStart = -1;
  const close = (end: number) => {
    if (runStart < 0) return;
    const lastByte = Math.min(end * block.pageSize, block.usedLength);
    ranges.push({ offset: block.pagesOffset + runStart * block.pageSize, length: lastByte - runStart * block.pageSize });
    runStart = -1;
  };
  for (let w = 0; w < bitmap.length / 8; w++) {
    const lo = bitmap.readUInt32LE(w * 8);
    const hi = bitmap.readUInt32LE(w * 8 + 4);
    if ((lo === 0 && hi === 0 && runStart < 0) || (lo === 0xffffffff && hi === 0xffffffff && runStart >= 0)) continue;
    for (let bit = 0; bit < 64; bit++) {
      const page = w * 64 + bit;
      if (page >= block.pages) break;
      const set = ((bit < 32 ? lo >>> bit : hi >>> (bit - 32)) & 1) === 1;
      if (set && runStart < 0) runStart = page;
      else if (!set) close(page);
    }
  }
  close(block.pages);
  return ranges;
}
