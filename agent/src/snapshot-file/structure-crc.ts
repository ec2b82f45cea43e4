// A CRC32 over every stream byte that is not a RAM page: QEMU's stream and
// RAM headers, the bitmaps and the device state. Recorded at save time, it
// lets a restore refuse a damaged file before QEMU is touched.
import fs from 'node:fs';
import { crc32 } from 'node:zlib';
import { readMappedRamLayout, structureRanges, type MappedRamLayout } from './mapped-ram.js';

export function structureCrc32(path: string, streamOffset: number, layout?: MappedRamLayout): number {
  layout ??= readMappedRamLayout(path, streamOffset, { countPages: false });
  const size = fs.statSync(path).size;
  const fd = fs.openSync(path, 'r');
  try {
    let crc = 0;
    const buf = Buffer.alloc(1 << 20);
    for (const [start, end] of structureRanges(layout, streamOffset, size)) {
      for (let pos = start; pos < end; ) {
        const n = fs.readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
        if (n <= 0) break;
        crc = crc32(buf.subarray(0, n), crc);
        pos += n;
      }
    }
    return crc;
  } finally {
    fs.closeSync(fd);
  }
}
