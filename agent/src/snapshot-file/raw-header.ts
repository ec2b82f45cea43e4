// The binary part of reading a header: magic, version, state, offsets, the
// CRC over the metadata and (given the node's key) the MAC, then JSON.parse.
// No schema: read.ts validates the metadata with zod; a lazy restore reads
// this first to start QEMU while zod loads (loading it costs about as long as
// starting QEMU), so the MAC and identity checks live here, before any use.
import fs from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';
import {
  MAC_BYTES,
  MAC_OFFSET,
  MAGIC,
  READABLE_FORMAT_VERSIONS,
  SNAPSHOT_FORMAT_VERSION,
  STATE_COMPLETE,
  STATE_INCOMPLETE,
  STREAM_OFFSET,
  SnapshotFileError,
  checkSnapshotIdentity,
  fixedBytes,
  headerMac,
  type HeaderTrust,
  type SnapshotState,
} from './header.js';

export interface RawSnapshotHeader {
  state: SnapshotState;
  streamOffset: number;
  /** Intact (CRC-checked) but not yet validated against the schema. */
  metadata: unknown;
  /** True when `trust` was given and the MAC checked out (a read with trust never returns false). */
  authenticated: boolean;
}

/**
 * With `trust`, refuses a header its key did not sign (unsigned, signed on
 * another node, or changed since) and, with `trust.snapshot`, one that names
 * another VMSnapshot. Without, reads any intact header (the CLI: the caller's
 * own files, no key).
 */
export function decodeRawHeader(buf: Buffer, what = 'file', trust?: HeaderTrust): RawSnapshotHeader {
  if (buf.length < 32 || !buf.subarray(0, 8).equals(MAGIC)) {
    throw new SnapshotFileError(`${what} is not a vmsnap snapshot (bad magic)`);
  }
  const version = buf.readUInt32LE(8);
  if (!(READABLE_FORMAT_VERSIONS as readonly number[]).includes(version)) {
    throw new SnapshotFileError(`${what} has snapshot format version ${version}; this vmsnap reads versions ${READABLE_FORMAT_VERSIONS.join(' and ')} (writes ${SNAPSHOT_FORMAT_VERSION})`);
  }
  const fixed = fixedBytes(version);
  const stateWord = buf.toString('latin1', 12, 16);
  if (stateWord !== STATE_COMPLETE && stateWord !== STATE_INCOMPLETE) {
    throw new SnapshotFileError(`${what} has a corrupted header (state word ${JSON.stringify(stateWord)})`);
  }
  const streamOffset = Number(buf.readBigUInt64LE(16));
  const length = buf.readUInt32LE(24);
  if (fixed + length > buf.length || fixed + length > streamOffset) {
    throw new SnapshotFileError(`${what} has a corrupted header (metadata length ${length})`);
  }
  const json = buf.subarray(fixed, fixed + length);
  const expected = buf.readUInt32LE(28);
  if (crc32(json, crc32(buf.subarray(0, 28))) !== expected) {
    throw new SnapshotFileError(`${what} has a corrupted header (checksum mismatch)`);
  }
  if (trust) checkMac(buf, json, version, trust.key, what);
  let metadata: unknown;
  try {
    metadata = JSON.parse(json.toString('utf8'));
  } catch {
    throw new SnapshotFileError(`${what} has a corrupted header (metadata is not JSON)`);
  }
  if (trust?.snapshot) checkSnapshotIdentity((metadata as { snapshot?: unknown } | null)?.snapshot, trust.snapshot, what);
  return { state: stateWord === STATE_COMPLETE ? 'complete' : 'incomplete', streamOffset, metadata, authenticated: !!trust };
}

function checkMac(buf: Buffer, json: Buffer, version: number, key: Buffer, what: string): void {
  const stored = version === 1 ? Buffer.alloc(MAC_BYTES) : buf.subarray(MAC_OFFSET, MAC_OFFSET + MAC_BYTES);
  if (stored.every((b) => b === 0)) {
    throw new SnapshotFileError(
      `${what} has an unauthenticated header (written by the vmsnap-agent CLI or an older vmsnap, without this node's key): ` +
        'the agent does not trust it; restore it with the CLI (vmsnap-agent restore) or take a new VMSnapshot',
    );
  }
  if (!timingSafeEqual(stored, headerMac(key, buf, json))) {
    throw new SnapshotFileError(
      `${what} has a header this node's agent did not write (its MAC does not match: changed after the save, or saved on another node): it is refused; ` +
        'take a new VMSnapshot',
    );
  }
}

/** Reads the first STREAM_OFFSET bytes of `path` (the whole header). */
export function readHeaderBytes(path: string): Buffer {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted in a snapshot's place must not block the agent (regular files ignore it).
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new SnapshotFileError(e.code === 'ENOENT' ? `no snapshot file at ${path}` : `cannot open ${path}: ${e.message}`);
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new SnapshotFileError(`${path} is not a regular file, so not a snapshot`);
    const buf = Buffer.alloc(STREAM_OFFSET);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

export function readRawHeader(path: string, trust?: HeaderTrust): RawSnapshotHeader {
  return decodeRawHeader(readHeaderBytes(path), path, trust);
}
