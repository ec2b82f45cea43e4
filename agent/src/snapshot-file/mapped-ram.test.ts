// readMappedRamLayout on a synthetic mapped-ram stream: block headers and the
// count of pages present, including bits past a block's last page (ignored).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readMappedRamLayout } from './mapped-ram.js';

const MiB = 1 << 20;

function be(bytes: number, value: number | bigint): Buffer {
  const b = Buffer.alloc(bytes);
  if (bytes === 4) b.writeUInt32BE(Number(value));
  else b.writeBigUInt64BE(BigInt(value));
  return b;
}

/** QEVM header, a RAM section with the given blocks (bitmap from `present`), nothing after. */
function writeStream(file: string, blocks: Array<{ id: string; pages: number; present: (p: number) => boolean }>): void {
  const PAGE = 4096;
  const total = blocks.reduce((s, b) => s + b.pages * PAGE, 0);
  const fd = fs.openSync(file, 'w');
  let pos = 0;
  const put = (buf: Buffer) => {
    fs.writeSync(fd, buf, 0, buf.length, pos);
    pos += buf.length;
  };
  put(Buffer.concat([be(4, 0x5145564d), be(4, 3), Buffer.from([0x07, 0, 0, 0, 0]) /* other sections' bytes */]));
  put(Buffer.concat([Buffer.from([0x01]), be(4, 2), Buffer.from('\x03ram', 'latin1'), be(4, 0), be(4, 4), be(8, BigInt(total) | 0x04n)]));
  for (const b of blocks) {
    const usedLength = b.pages * PAGE;
    put(Buffer.concat([Buffer.from([b.id.length]), Buffer.from(b.id, 'latin1'), be(8, usedLength), be(4, 1), be(8, PAGE)]));
    const bitmapOffset = pos + 16;
    const bitmap = Buffer.alloc(Math.ceil(b.pages / 64) * 8, 0);
    for (let p = 0; p < b.pages; p++) if (b.present(p)) bitmap[p >> 3]! |= 1 << (p & 7);
    // Set bits past the last page: padding of the last word that must not count.
    for (let p = b.pages; p < bitmap.length * 8; p++) bitmap[p >> 3]! |= 1 << (p & 7);
    const pagesOffset = Math.ceil((bitmapOffset + bitmap.length) / MiB) * MiB;
    put(Buffer.concat([be(8, bitmapOffset), be(8, pagesOffset), bitmap]));
    pos = pagesOffset + usedLength;
  }
  fs.ftruncateSync(fd, pos);
  fs.closeSync(fd);
}

it('walks the blocks and counts present pages, whatever the word boundaries', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-mapped-ram-'));
  try {
    const file = path.join(dir, 'stream');
    const main = { id: 'pc.ram', pages: 64 * 40 + 37, present: (p: number) => p % 3 === 0 || (p >= 700 && p < 1500) || p === 64 * 40 + 36 };
    const rom = { id: '/rom@etc/acpi/tables', pages: 31, present: (p: number) => p < 5 || p === 30 };
    const full = { id: 'pc.bios', pages: 64, present: () => true };
    writeStream(file, [main, rom, full]);
    const layout = readMappedRamLayout(file, 0);
    const expected = (b: typeof main) => Array.from({ length: b.pages }, (_, p) => b.present(p)).filter(Boolean).length;
    expect(layout.blocks.map((b) => [b.id, b.pages, b.pagesPresent])).toEqual([
      ['pc.ram', main.pages, expected(main)],
      ['/rom@etc/acpi/tables', 31, 6],
      ['pc.bios', 64, 64],
    ]);
    expect(layout.totalRamBytes).toBe((main.pages + 31 + 64) * 4096);
    expect(readMappedRamLayout(file, 0, { countPages: false }).blocks.every((b) => b.pagesPresent === -1)).toBe(true);
    // Stopping at a block (a lazy restore's early start needs only the main one).
    expect(readMappedRamLayout(file, 0, { countPages: false, until: '/rom@etc/acpi/tables' }).blocks.map((b) => b.id)).toEqual(['pc.ram', '/rom@etc/acpi/tables']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
