// A CRC32 over every stream byte that is not a RAM page: QEMU's stream and
// RAM headers, the bitmaps and the device state. Recorded at save time, it
// lets a restore refuse a damaged file before QEMU is touched. With the
// node's header key the same bytes also get an HMAC: the tenant's QEMU may
// keep a writable fd to the file after the save, and a CRC it can forge.
import fs from 'node:fs';
import { createHmac } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { readMappedRamLayout, structureRanges, type MappedRamLayout } from './mapped-ram.js';

/** Keeps a structure MAC from ever equalling a header MAC computed under the same key. */
const STRUCTURE_MAC_DOMAIN = Buffer.from('vmsnap stream structure\0', 'latin1');

export interface StructureChecks {
  crc32: number;
  /** Hex HMAC-SHA256, when a key was given. */
  mac?: string;
}

export function structureChecks(path: string, streamOffset: number, layout?: MappedRamLayout, key?: Buffer): StructureChecks {
  layout ??= readMappedRamLayout(path, streamOffset, { countPages: false });
  const size = fs.statSync(path).size;
  const fd = fs.openSync(path, 'r');
  const hmac = key ? createHmac('sha256', key).update(STRUCTURE_MAC_DOMAIN) : undefined;
  try {
    let crc = 0;
    const buf = Buffer.alloc(1 << 20);
    for (const [start, end] of structureRanges(layout, streamOffset, size)) {
      for (let pos = start; pos < end; ) {
        const n = fs.readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
        if (n <= 0) break;
        crc = crc32(buf.subarray(0, n), crc);
        hmac?.update(buf.subarray(0, n));
        pos += n;
      }
    }
    return { crc32: crc, ...(hmac ? { mac: hmac.digest('hex') } : {}) };
  } finally {
    fs.closeSync(fd);
  }
}

export function structureCrc32(path: string, streamOffset: number, layout?: MappedRamLayout): number {
  return structureChecks(path, streamOffset, layout).crc32;
}
