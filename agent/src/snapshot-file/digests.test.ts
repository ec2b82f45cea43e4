// digestBlock against a plain reference: per region, the hash of the present
// pages in order, whatever the windows, holes and region boundaries.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { digestBlock } from './digests.js';
import type { RamBlockInfo } from './mapped-ram.js';

const PAGE = 4096;

function reference(pages: Buffer[], present: (p: number) => boolean, pagesPerRegion: number, algorithm: 'sha256' | 'crc32'): string[] {
  const out: string[] = [];
  for (let first = 0; first < pages.length; first += pagesPerRegion) {
    const parts = pages.slice(first, first + pagesPerRegion).filter((_, i) => present(first + i));
    const data = Buffer.concat(parts);
    out.push(algorithm === 'sha256' ? createHash('sha256').update(data).digest('hex') : crc32(data).toString(16).padStart(8, '0'));
  }
  return out;
}

it.each(['sha256', 'crc32'] as const)('%s: matches the reference across windows, holes, partial last page and region ends', async (algorithm) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-digests-'));
  try {
    const regionBytes = 12 << 20; // 3072 pages: one and a half 8 MiB windows per region
    const pageCount = 3072 * 3 + 100; // a short fourth region
    const usedLength = pageCount * PAGE - 1000; // partial last page
    // Present: a few scattered pages, a long run across a window edge, an empty stretch (a whole window of holes), the last page.
    const present = (p: number) => p % 97 === 0 || (p >= 1900 && p < 2300) || (p >= 3072 + 2048 && p < 6144 ? false : p % 13 === 0) || p === pageCount - 1;
    const bitmapOffset = 4096;
    const pagesOffset = 1 << 20;
    const bitmap = Buffer.alloc(Math.ceil(pageCount / 64) * 8);
    for (let p = 0; p < pageCount; p++) if (present(p)) bitmap[p >> 3]! |= 1 << (p & 7);
    const pages: Buffer[] = [];
    const file = path.join(dir, 'f');
    const fd = fs.openSync(file, 'w');
    fs.writeSync(fd, bitmap, 0, bitmap.length, bitmapOffset);
    for (let p = 0; p < pageCount; p++) {
      const len = p === pageCount - 1 ? usedLength - p * PAGE : PAGE;
      const page = present(p) ? randomBytes(len) : Buffer.alloc(len);
      // Absent pages hold junk in the file: they must not count.
      fs.writeSync(fd, present(p) ? page : Buffer.alloc(len, 0xee), 0, len, pagesOffset + p * PAGE);
      pages.push(page);
    }
    fs.closeSync(fd);
    const block: RamBlockInfo = { id: 'pc.ram', usedLength, pageSize: PAGE, bitmapOffset, pagesOffset, pages: pageCount, pagesPresent: -1 };
    const handle = await fs.promises.open(file, 'r');
    const got: string[] = [];
    const hashed = await digestBlock(handle, block, algorithm, regionBytes, (i, d) => (got[i] = d));
    await handle.close();
    expect(got).toEqual(reference(pages, present, regionBytes / PAGE, algorithm));
    expect(hashed).toBe(pages.filter((_, p) => present(p)).reduce((s, b) => s + b.length, 0));
    // One flipped byte in a present page changes exactly its region's digest.
    const at = pagesOffset + 6149 * PAGE + 7; // region 2 (pages 6144..9215), page 6149 = 13 * 473 is present
    const w = fs.openSync(file, 'r+');
    fs.writeSync(w, Buffer.from([~fs.readFileSync(file).subarray(at, at + 1)[0]! & 0xff]), 0, 1, at);
    fs.closeSync(w);
    const again: string[] = [];
    const h2 = await fs.promises.open(file, 'r');
    await digestBlock(h2, block, algorithm, regionBytes, (i, d) => (again[i] = d));
    await h2.close();
    expect(again.map((d, i) => d === got[i])).toEqual([true, true, false, true]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
