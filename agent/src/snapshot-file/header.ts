// vmsnap's header at the start of a snapshot file. QEMU's stream follows at a
// 1 MiB-aligned offset. The state word says "incomplete" until the save has
// finished and been synced, so a crash never leaves a file that looks good.
//
//   0  8  magic "VMSNAP\r\n"
//   8  4  format version (u32 LE)
//  12  4  state: "PART" while saving, "DONE" once complete and synced
//  16  8  stream offset (u64 LE)
//  24  4  metadata length (u32 LE)
//  28  4  CRC32 of bytes 0..28 and the metadata
//  32  n  metadata, UTF-8 JSON (SnapshotMetadataSchema)
import { crc32 } from 'node:zlib';
import fs from 'node:fs';
import type { SnapshotMetadata } from './metadata.js';

/** Bumped when the layout or the metadata changes incompatibly. */
export const SNAPSHOT_FORMAT_VERSION = 1;
export const MAGIC = Buffer.from('VMSNAP\r\n', 'latin1');
export const STREAM_OFFSET = 1 << 20;
export const FIXED_BYTES = 32;
export const STATE_INCOMPLETE = 'PART';
export const STATE_COMPLETE = 'DONE';

export type SnapshotState = 'incomplete' | 'complete';

export interface SnapshotHeader {
  state: SnapshotState;
  streamOffset: number;
  metadata: SnapshotMetadata;
}

export class SnapshotFileError extends Error {
  override name = 'SnapshotFileError';
}

export function encodeHeader(state: SnapshotState, metadata: SnapshotMetadata): Buffer {
  const json = Buffer.from(JSON.stringify(metadata), 'utf8');
  const offset = metadata.stream.offset;
  if (FIXED_BYTES + json.length > offset) {
    throw new SnapshotFileError(`snapshot metadata (${json.length} bytes) does not fit before the stream offset ${offset}`);
  }
  const buf = Buffer.alloc(FIXED_BYTES + json.length);
  MAGIC.copy(buf, 0);
  buf.writeUInt32LE(SNAPSHOT_FORMAT_VERSION, 8);
  buf.write(state === 'complete' ? STATE_COMPLETE : STATE_INCOMPLETE, 12, 'latin1');
  buf.writeBigUInt64LE(BigInt(offset), 16);
  buf.writeUInt32LE(json.length, 24);
  json.copy(buf, FIXED_BYTES);
  buf.writeUInt32LE(crc32(json, crc32(buf.subarray(0, 28))), 28);
  return buf;
}

export function writeHeader(fd: number, state: SnapshotState, metadata: SnapshotMetadata): void {
  const buf = encodeHeader(state, metadata);
  fs.writeSync(fd, buf, 0, buf.length, 0);
}
