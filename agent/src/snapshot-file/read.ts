// Reading a header back: the binary layout checked field by field, then the
// metadata parsed with its zod schema (kept out of header.ts so that a save,
// which only writes headers, does not pay for loading zod).
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
  type SnapshotHeader,
} from './header.js';
import { SnapshotMetadataSchema } from './metadata.js';

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
