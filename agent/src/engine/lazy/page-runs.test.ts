import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { presentPageRanges } from './page-runs.js';

describe('presentPageRanges', () => {
  it('turns set bits of the little-endian bitmap into file ranges of present pages', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'page-runs-'));
    const file = path.join(dir, 'bitmap');
    // 130 pages: bits 0-2, 63-65 (across a word boundary), 129 (the last page, partial).
    const bitmap = Buffer.alloc(24);
    for (const bit of [0, 1, 2, 63, 64, 65, 129]) bitmap[bit >> 3]! |= 1 << (bit & 7);
    fs.writeFileSync(file, bitmap);
    const fd = fs.openSync(file, 'r');
    try {
      const block = { id: 'b', usedLength: 129 * 4096 + 100, pageSize: 4096, bitmapOffset: 0, pagesOffset: 1 << 20, pages: 130, pagesPresent: -1 };
      expect(presentPageRanges(fd, block)).toEqual([
        { offset: (1 << 20) + 0, length: 3 * 4096 },
        { offset: (1 << 20) + 63 * 4096, length: 3 * 4096 },
        { offset: (1 << 20) + 129 * 4096, length: 100 },
      ]);
      // The third word alone (bit 1 set) as a 64-page block: one page.
      expect(presentPageRanges(fd, { ...block, bitmapOffset: 16, pages: 64, usedLength: 64 * 4096 })).toEqual([{ offset: (1 << 20) + 4096, length: 4096 }]);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
