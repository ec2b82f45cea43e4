// The last step of a save: make QEMU's stream durable, then mark the header
// complete. Shared by saveVm and by the agent, which finishes a file whose
// save completed in QEMU while the agent was down. Called once QEMU gave its
// fds back (remove-fd); since a hostile QEMU may have kept a dup anyway, the
// header and the stream's structure are MACed with the node's key when given.
import fs from 'node:fs';
import { writeHeader } from '../snapshot-file/header.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';
import { structureChecks } from '../snapshot-file/structure-crc.js';
import { allocatedBytes } from './file-stats.js';

export type SnapshotStats = NonNullable<SnapshotMetadata['stats']>;

export interface FinishedFile {
  /** File size when complete (also recorded as metadata.stream.endOffset). */
  endOffset: number;
  allocatedBytes: number;
}

/**
 * fsyncs `fd` (open for writing on `path`), records the end offset and the
 * structure checksum, then writes the "complete" header and fsyncs again.
 * `stats` is called after the (slow) checksum so that its timings include it.
 * Mutates `metadata`. `key`: the node's header key (the agent; the CLI has none).
 */
export function finishSnapshotFile(fd: number, path: string, metadata: SnapshotMetadata, stats: () => SnapshotStats, key?: Buffer): FinishedFile {
  // QEMU does not fsync; the header says "complete" only after the data is durable.
  fs.fsyncSync(fd);
  const endOffset = fs.fstatSync(fd).size;
  metadata.stream.endOffset = endOffset;
  const checks = structureChecks(path, metadata.stream.offset, undefined, key);
  metadata.stream.structureCrc32 = checks.crc32;
  if (checks.mac) metadata.stream.structureMac = checks.mac;
  metadata.completedAt = new Date().toISOString();
  metadata.stats = stats();
  writeHeader(fd, 'complete', metadata, key);
  fs.fsyncSync(fd);
  return { endOffset, allocatedBytes: allocatedBytes(fs.fstatSync(fd)) };
}
