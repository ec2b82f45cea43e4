// Everything a restore checks before it touches QEMU: a complete, intact
// header (with the node's key: written by this agent for this VMSnapshot), a
// file as long as the save left it, and an unchanged stream structure.
import fs from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import { SnapshotFileError, type HeaderTrust, type SnapshotHeader } from './header.js';
import { readHeader } from './read.js';
import { readMappedRamLayout, type MappedRamLayout } from './mapped-ram.js';
import { structureChecks } from './structure-crc.js';

export interface VerifiedSnapshot {
  header: SnapshotHeader;
  layout: MappedRamLayout;
  fileSize: number;
}

export function verifySnapshotFile(path: string, trust?: HeaderTrust): VerifiedSnapshot {
  const header = readHeader(path, trust);
  if (header.state !== 'complete') {
    throw new SnapshotFileError(`${path} is an incomplete snapshot: its save never finished (interrupted or failed); it cannot be restored`);
  }
  const { stream } = header.metadata;
  const fileSize = fs.statSync(path).size;
  if (stream.endOffset === undefined || stream.structureCrc32 === undefined) {
    throw new SnapshotFileError(`${path} is marked complete but lacks its end offset or checksum (corrupted header)`);
  }
  if (trust && stream.structureMac === undefined) {
    throw new SnapshotFileError(`${path} has no MAC of its stream structure (saved without this node's key): it is refused; take a new VMSnapshot`);
  }
  if (fileSize < stream.endOffset) {
    throw new SnapshotFileError(`${path} is truncated: ${fileSize} bytes, the save wrote ${stream.endOffset}`);
  }
  const layout = readMappedRamLayout(path, header.streamOffset);
  const checks = structureChecks(path, header.streamOffset, layout, trust?.key);
  if (checks.crc32 !== stream.structureCrc32) {
    throw new SnapshotFileError(`${path} is corrupted: QEMU's stream headers or device state changed since the save (checksum mismatch)`);
  }
  if (trust && !macEqual(checks.mac!, stream.structureMac!)) {
    throw new SnapshotFileError(
      `${path} was changed after the save: QEMU's stream headers or device state no longer match the MAC this node's agent recorded; it is refused`,
    );
  }
  return { header, layout, fileSize };
}

function macEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}
