// vmsnap's header at the start of a snapshot file. QEMU's stream follows at a
// 1 MiB-aligned offset. The state word says "incomplete" until the save has
// finished and been synced, so a crash never leaves a file that looks good.
//
// Format version 2:
//   0  8  magic "VMSNAP\r\n"
//   8  4  format version (u32 LE)
//  12  4  state: "PART" while saving, "DONE" once complete and synced
//  16  8  stream offset (u64 LE)
//  24  4  metadata length (u32 LE)
//  28  4  CRC32 of bytes 0..28 and the metadata (damage, not tampering)
//  32 32  HMAC-SHA256 of bytes 0..32 and the metadata under the node's header
//         key (header-key.ts); all zero when written without a key (the CLI)
//  64  n  metadata, UTF-8 JSON (SnapshotMetadataSchema)
// Version 1 (read only) had no MAC: its metadata starts at 32.
//
// Why a MAC: the VM's own QEMU, which the tenant controls, holds a writable fd
// to this file during the save and can keep it forever (dup), so a CRC proves
// nothing about who wrote the header; only a key the tenant never sees does.
import { createHmac } from 'node:crypto';
import { crc32 } from 'node:zlib';
import fs from 'node:fs';
import type { SnapshotIdentity, SnapshotMetadata } from './metadata.js';
import { VmsnapError } from '../errors.js';

/** Bumped when the layout or the metadata changes incompatibly. */
export const SNAPSHOT_FORMAT_VERSION = 2;
/** Older versions this vmsnap still reads (as unauthenticated files). */
export const READABLE_FORMAT_VERSIONS = [1, 2] as const;
export const MAGIC = Buffer.from('VMSNAP\r\n', 'latin1');
export const STREAM_OFFSET = 1 << 20;
export const MAC_OFFSET = 32;
export const MAC_BYTES = 32;
/** Where the metadata starts, per format version. */
export function fixedBytes(version: number): number {
  return version === 1 ? 32 : MAC_OFFSET + MAC_BYTES;
}
export const FIXED_BYTES = fixedBytes(SNAPSHOT_FORMAT_VERSION);
export const STATE_INCOMPLETE = 'PART';
export const STATE_COMPLETE = 'DONE';

export type SnapshotState = 'incomplete' | 'complete';

export interface SnapshotHeader {
  state: SnapshotState;
  streamOffset: number;
  metadata: SnapshotMetadata;
  /** The header's MAC checked out under the key the reader was given (see HeaderTrust). */
  authenticated: boolean;
}

/**
 * What the agent holds that a tenant cannot: the node's header key and, for a
 * file of a VMSnapshot, that snapshot's identity. A save writes both into the
 * header; a read with it refuses any header the key did not sign, or that
 * names another VMSnapshot.
 */
export interface HeaderTrust {
  key: Buffer;
  /** Absent only where no single snapshot is expected (scans of the storage root). */
  snapshot?: SnapshotIdentity;
}

export class SnapshotFileError extends VmsnapError {
  override name = 'SnapshotFileError';
}

/** HMAC-SHA256 over the header without its MAC field: bytes 0..32 and the metadata. */
export function headerMac(key: Buffer, fixed: Buffer, json: Buffer): Buffer {
  return createHmac('sha256', key).update(fixed.subarray(0, MAC_OFFSET)).update(json).digest();
}

export function encodeHeader(state: SnapshotState, metadata: SnapshotMetadata, key?: Buffer): Buffer {
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
  if (key) headerMac(key, buf, json).copy(buf, MAC_OFFSET);
  return buf;
}

export function writeHeader(fd: number, state: SnapshotState, metadata: SnapshotMetadata, key?: Buffer): void {
  const buf = encodeHeader(state, metadata, key);
  fs.writeSync(fd, buf, 0, buf.length, 0);
}

/**
 * Pure: refuses a header that is not the expected VMSnapshot's. `recorded` is
 * the metadata's `snapshot` field as read (unknown: called before the schema).
 */
export function checkSnapshotIdentity(recorded: unknown, expected: SnapshotIdentity, what: string): void {
  const r = (recorded ?? {}) as Partial<Record<keyof SnapshotIdentity, unknown>>;
  if (r.namespace === expected.namespace && r.name === expected.name && r.uid === expected.uid) return;
  const named = typeof r.namespace === 'string' ? `VMSnapshot ${r.namespace}/${String(r.name)} (uid ${String(r.uid)})` : 'no VMSnapshot';
  throw new SnapshotFileError(
    `${what} belongs to ${named}, not to VMSnapshot ${expected.namespace}/${expected.name} (uid ${expected.uid}) that it is restored from: ` +
      "it is refused; restore from the VMSnapshot whose file it is (a file is never shared between snapshots)",
  );
}
