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
import { SNAPSHOT_FORMAT_VERSION, SnapshotMetadataSchema, type SnapshotMetadata } from './metadata.js';

export const MAGIC = Buffer.from('VMSNAP\r\n', 'latin1');
export const STREAM_OFFSET = 1 << 20;
const FIXED_BYTES = 32;
const STATE_INCOMPLETE = 'PART';
const STATE_COMPLETE = 'DONE';

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

/** Parses a header, refusing anything that is not a well-formed vmsnap header. */
export function decodeHeader(buf: Buffer, what = 'file'): SnapshotHeader {
  if (buf.length < FIXED_BYTES || !buf.subarray(0, 8).equals(MAGIC)) {
    throw new SnapshotFileError(`${what} is not a vmsnap snapshot (bad magic)`);
  }
  const version = buf.readUInt32LE(8);
  if (version !== SNAPSHOT_FORMAT_VERSION) {
    throw new SnapshotFileError(`${what} has snapshot format version ${version}; this vmsnap reads version ${SNAPSHOT_FORMAT_VERSION}`);
  }
  const stateWord = buf.toString('latin1', 12, 16);
  if (stateWord !== STATE_COMPLETE && stateWord !== STATE_INCOMPLETE) {
    throw new SnapshotFileError(`${what} has a corrupted header (state word ${JSON.stringify(stateWord)})`);
  }
  const streamOffset = Number(buf.readBigUInt64LE(16));
  const length = buf.readUInt32LE(24);
  if (FIXED_BYTES + length > buf.length || FIXED_BYTES + length > streamOffset) {
    throw new SnapshotFileError(`${what} has a corrupted header (metadata length ${length})`);
  }
  const json = buf.subarray(FIXED_BYTES, FIXED_BYTES + length);
  const expected = buf.readUInt32LE(28);
  if (crc32(json, crc32(buf.subarray(0, 28))) !== expected) {
    throw new SnapshotFileError(`${what} has a corrupted header (checksum mismatch)`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(json.toString('utf8'));
  } catch {
    throw new SnapshotFileError(`${what} has a corrupted header (metadata is not JSON)`);
  }
  const result = SnapshotMetadataSchema.safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new SnapshotFileError(`${what} has invalid metadata at ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  if (result.data.stream.offset !== streamOffset) {
    throw new SnapshotFileError(`${what} has a corrupted header (stream offsets disagree)`);
  }
  return { state: stateWord === STATE_COMPLETE ? 'complete' : 'incomplete', streamOffset, metadata: result.data };
}

export function readHeader(path: string): SnapshotHeader {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new SnapshotFileError(e.code === 'ENOENT' ? `no snapshot file at ${path}` : `cannot open ${path}: ${e.message}`);
  }
  try {
    const buf = Buffer.alloc(STREAM_OFFSET);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return decodeHeader(buf.subarray(0, n), path);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeHeader(fd: number, state: SnapshotState, metadata: SnapshotMetadata): void {
  const buf = encodeHeader(state, metadata);
  fs.writeSync(fd, buf, 0, buf.length, 0);
}
