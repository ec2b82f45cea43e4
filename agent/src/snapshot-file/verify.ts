// Everything a restore checks before it touches QEMU: a complete, intact
// header, a file as long as the save left it, and an unchanged stream structure.
import fs from 'node:fs';
import { SnapshotFileError, type SnapshotHeader } from './header.js';
import { readHeader } from './read.js';
import { readMappedRamLayout, type MappedRamLayout } from './mapped-ram.js';
import { structureCrc32 } from './structure-crc.js';

export interface VerifiedSnapshot {
  header: SnapshotHeader;
  layout: MappedRamLayout;
  fileSize: number;
}

export function verifySnapshotFile(path: string): VerifiedSnapshot {
  const header = readHeader(path);
  if (header.state !== 'complete') {
    throw new SnapshotFileError(`${path} is an incomplete snapshot: its save never finished (interrupted or failed); it cannot be restored`);
  }
  const { stream } = header.metadata;
  const fileSize = fs.statSync(path).size;
  if (stream.endOffset === undefined || stream.structureCrc32 === undefined) {
    throw new SnapshotFileError(`${path} is marked complete but lacks its end offset or checksum (corrupted header)`);
  }
  if (fileSize < stream.endOffset) {
    throw new SnapshotFileError(`${path} is truncated: ${fileSize} bytes, the save wrote ${stream.endOffset}`);
  }
  const layout = readMappedRamLayout(path, header.streamOffset);
  const crc = structureCrc32(path, header.streamOffset, layout);
  if (crc !== stream.structureCrc32) {
    throw new SnapshotFileError(`${path} is corrupted: QEMU's stream headers or device state changed since the save (checksum mismatch)`);
  }
  return { header, layout, fileSize };
}
