// Reads QEMU's mapped-ram stream without QEMU: the RAM section's per-block
// headers (id, used length, page size, bitmap and page offsets) and each
// block's bitmap of pages present. Layout (big-endian, QEMU migration/ram.c):
//   "QEVM" be32, version be32 (3), configuration section, ...
//   ram section start: 0x01, be32 section id, u8 len, "ram", be32 instance, be32 version
//   be64 total RAM bytes | RAM_SAVE_FLAG_MEM_SIZE (0x04)
//   per block: u8 len, idstr, be64 used_length, then a 28-byte header
//     be32 version (1), be64 page_size, be64 bitmap_offset, be64 pages_offset
//   and the next block starts at pages_offset + used_length.
// The bitmap holds host-endian (x86-64: little-endian) 64-bit words.
import fs from 'node:fs';
import { SnapshotFileError } from './header.js';

export const QEVM_MAGIC = 0x5145564d;
const QEVM_VERSION = 3;
const RAM_SAVE_FLAG_MEM_SIZE = 0x04n;
const MAPPED_RAM_VERSION = 1;
/** The ram section start is near the front; anything further is not a mapped-ram stream. */
const SECTION_SEARCH_BYTES = 1 << 20;

export interface RamBlockInfo {
  id: string;
  usedLength: number;
  pageSize: number;
  /** Absolute file offset of the block's bitmap. */
  bitmapOffset: number;
  /** Absolute file offset of page 0 (1 MiB-aligned). */
  pagesOffset: number;
  pages: number;
  pagesPresent: number;
}

export interface MappedRamLayout {
  totalRamBytes: number;
  blocks: RamBlockInfo[];
  /** File offset just past the last block's page region (device state follows). */
  pagesEnd: number;
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const n = fs.readSync(fd, buf, 0, length, offset);
  return buf.subarray(0, n);
}

class Cursor {
  constructor(
    private readonly fd: number,
    public pos: number,
    private readonly what: string,
  ) {}
  bytes(n: number): Buffer {
    const b = readAt(this.fd, this.pos, n);
    if (b.length < n) throw new SnapshotFileError(`${this.what} is truncated inside QEMU's RAM headers (offset ${this.pos})`);
    this.pos += n;
    return b;
  }
  u8(): number {
    return this.bytes(1).readUInt8(0);
  }
  be32(): number {
    return this.bytes(4).readUInt32BE(0);
  }
  be64(): bigint {
    return this.bytes(8).readBigUInt64BE(0);
  }
}

/** Where the search for the RAM section starts: it follows a configuration section of a few hundred bytes. */
const FIRST_SEARCH_BYTES = 64 << 10;

/** Finds the RAM section start: 0x01, 4-byte section id, "\x03ram". */
function findRamSection(fd: number, streamOffset: number, what: string): number {
  // A small read first: on a cold cache, every restore pays for what it reads here.
  return searchRamSection(fd, streamOffset, what, FIRST_SEARCH_BYTES) ?? searchRamSection(fd, streamOffset, what, SECTION_SEARCH_BYTES)!;
}

function searchRamSection(fd: number, streamOffset: number, what: string, bytes: number): number | undefined {
  const window = readAt(fd, streamOffset, bytes);
  if (window.length < 8 || window.readUInt32BE(0) !== QEVM_MAGIC) {
    throw new SnapshotFileError(`${what} has no QEMU migration stream at offset ${streamOffset} (missing QEVM magic)`);
  }
  const version = window.readUInt32BE(4);
  if (version !== QEVM_VERSION) throw new SnapshotFileError(`${what} has QEMU stream version ${version}, expected ${QEVM_VERSION}`);
  const needle = Buffer.from([0x03, 0x72, 0x61, 0x6d]);
  let from = 8;
  for (;;) {
    const at = window.indexOf(needle, from);
    if (at < 0 && bytes < SECTION_SEARCH_BYTES && window.length === bytes) return undefined; // look further
    if (at < 0) throw new SnapshotFileError(`${what} has no RAM section in its QEMU stream (not a mapped-ram save?)`);
    if (at >= 5 && window[at - 5] === 0x01) return streamOffset + at + needle.length;
    from = at + 1;
  }
}

/** Set bits of a 32-bit word (SWAR; BigInt arithmetic was 16 ms of a 1 GiB lazy restore). */
function popcount32(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}

/** The low `bits` bits of a 32-bit word (all of them from 32 up). */
const lowBits = (word: number, bits: number) => (bits >= 32 ? word : bits <= 0 ? 0 : word & ((1 << bits) - 1));

/** Counts the set bits of a block's bitmap (little-endian 64-bit words), reading it in 1 MiB slices. */
function countPresent(fd: number, bitmapOffset: number, pages: number, what: string): number {
  const words = Math.ceil(pages / 64);
  let present = 0;
  const slice = 1 << 20;
  for (let done = 0; done < words * 8; done += slice) {
    const len = Math.min(slice, words * 8 - done);
    const buf = readAt(fd, bitmapOffset + done, len);
    if (buf.length < len) throw new SnapshotFileError(`${what} is truncated inside a RAM bitmap`);
    for (let i = 0; i < len; i += 4) {
      const word = buf.readUInt32LE(i);
      if (word === 0) continue;
      present += popcount32(lowBits(word, pages - ((done + i) / 4) * 32));
    }
  }
  return present;
}

/**
 * `until`: stop after this block (the layout then lists the blocks up to it,
 * and totalRamBytes and pagesEnd are NaN). Each block's header lies past the
 * previous block's pages: on a cold cache every block costs a disk read.
 */
export function readMappedRamLayout(path: string, streamOffset: number, opts: { countPages?: boolean; until?: string } = {}): MappedRamLayout {
  const fd = fs.openSync(path, 'r');
  try {
    return walk(fd, streamOffset, path, opts.countPages ?? true, opts.until);
  } finally {
    fs.closeSync(fd);
  }
}

function walk(fd: number, streamOffset: number, what: string, countPages: boolean, until?: string): MappedRamLayout {
  const cur = new Cursor(fd, findRamSection(fd, streamOffset, what), what);
  cur.be32(); // instance id
  cur.be32(); // section version
  const sizeWord = cur.be64();
  if ((sizeWord & RAM_SAVE_FLAG_MEM_SIZE) === 0n) {
    throw new SnapshotFileError(`${what} has a RAM section without its size record`);
  }
  const totalRamBytes = Number(sizeWord & ~0xfffn);
  const blocks: RamBlockInfo[] = [];
  let accounted = 0;
  while (accounted < totalRamBytes) {
    const idLength = cur.u8();
    const id = cur.bytes(idLength).toString('latin1');
    const usedLength = Number(cur.be64());
    const headerVersion = cur.be32();
    if (headerVersion !== MAPPED_RAM_VERSION) {
      throw new SnapshotFileError(`${what}: RAM block ${id} has mapped-ram header version ${headerVersion} (not a mapped-ram save, or corrupted)`);
    }
    const pageSize = Number(cur.be64());
    const bitmapOffset = Number(cur.be64());
    const pagesOffset = Number(cur.be64());
    if (bitmapOffset !== cur.pos || pagesOffset < bitmapOffset || pagesOffset % (1 << 20) !== 0 || pageSize <= 0 || usedLength <= 0) {
      throw new SnapshotFileError(`${what}: RAM block ${id} has an inconsistent mapped-ram header (corrupted)`);
    }
    const pages = Math.ceil(usedLength / pageSize);
    blocks.push({
      id,
      usedLength,
      pageSize,
      bitmapOffset,
      pagesOffset,
      pages,
      pagesPresent: countPages ? countPresent(fd, bitmapOffset, pages, what) : -1,
    });
    if (id === until) return { totalRamBytes: NaN, blocks, pagesEnd: NaN };
    accounted += usedLength;
    cur.pos = pagesOffset + usedLength;
  }
  if (accounted !== totalRamBytes) {
    throw new SnapshotFileError(`${what}: RAM blocks add up to ${accounted} bytes, the stream says ${totalRamBytes}`);
  }
  return { totalRamBytes, blocks, pagesEnd: cur.pos };
}

/**
 * The byte ranges of the stream that are not RAM pages: QEMU's headers, the
 * bitmaps and device state. Small (a few MiB at most) and cheap to checksum.
 */
export function structureRanges(layout: MappedRamLayout, streamOffset: number, fileSize: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  let from = streamOffset;
  for (const b of layout.blocks) {
    // Between a block's bitmap end and its pages lies alignment padding; it is a hole and reads as zeros.
    ranges.push([from, b.pagesOffset]);
    from = b.pagesOffset + b.usedLength;
  }
  ranges.push([from, fileSize]);
  return ranges.filter(([a, b]) => b > a);
}
