// The binary part of reading a header: magic, version, state, offsets and the
// CRC over the metadata, then JSON.parse. No schema: read.ts validates the
// metadata with zod; a lazy restore reads this first to start QEMU while zod
// loads (loading it costs about as long as starting QEMU).
import fs from 'node:fs';
import { crc32 } from 'node:zlib';
import {
  FIXED_BYTES,
  MAGIC,
  SNAPSHOT_FORMAT_VERSION,
  STATE_COMPLETE,
  STATE_INCOMPLETE,
  STREAM_OFFSET,
  SnapshotFileError,
  type SnapshotState,
} from './header.js';

export interface RawSnapshotHeader {
  state: SnapshotState;
  streamOffset: number;
  /** Intact (CRC-checked) but not yet validated against the schema. */
  metadata: unknown;
}

export function decodeRawHeader(buf: Buffer, what = 'file'): RawSnapshotHeader {
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
  let metadata: unknown;
  try {
    metadata = JSON.parse(json.toString('utf8'));
  } catch {
    throw new SnapshotFileError(`${what} has a corrupted header (metadata is not JSON)`);
  }
  return { state: stateWord === STATE_COMPLETE ? 'complete' : 'incomplete', streamOffset, metadata };
}

/** Reads the first STREAM_OFFSET bytes of `path` (the whole header). */
export function readHeaderBytes(path: string): Buffer {
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
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

export function readRawHeader(path: string): RawSnapshotHeader {
  return decodeRawHeader(readHeaderBytes(path), path);
}
