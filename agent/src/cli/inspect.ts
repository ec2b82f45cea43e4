// `vmsnap-agent inspect`: the header and QEMU's RAM blocks, read without QEMU.
import fs from 'node:fs';
import { readHeader } from '../snapshot-file/read.js';
import { readMappedRamLayout, type RamBlockInfo } from '../snapshot-file/mapped-ram.js';
import { structureCrc32 } from '../snapshot-file/structure-crc.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';
import { allocatedBytes } from '../engine/file-stats.js';
import { checkDigests, type DigestCheck } from '../snapshot-file/check-digests.js';

export interface InspectReport {
  path: string;
  state: 'complete' | 'incomplete';
  /** Problems found (truncation, checksum mismatch, unreadable RAM headers); empty when the file is good. */
  problems: string[];
  logicalBytes: number;
  allocatedBytes: number;
  metadata: SnapshotMetadata;
  ramBlocks: RamBlockInfo[];
  pagesPresentBytes: number;
  /** With --verify: the RAM digest check (a mismatch is in problems). */
  digests?: DigestCheck;
}

export async function inspectSnapshot(path: string, opts: { verify?: boolean } = {}): Promise<InspectReport> {
  const header = readHeader(path);
  const stat = fs.statSync(path);
  const problems: string[] = [];
  let ramBlocks: RamBlockInfo[] = [];
  let digests: DigestCheck | undefined;
  const { stream } = header.metadata;
  if (header.state === 'incomplete') problems.push('incomplete: the save never finished; this file cannot be restored');
  if (stream.endOffset !== undefined && stat.size < stream.endOffset) {
    problems.push(`truncated: ${stat.size} bytes, the save wrote ${stream.endOffset}`);
  }
  for (const d of header.metadata.disks ?? []) {
    if (!fs.existsSync(d.base)) problems.push(`disk ${d.device}: its frozen base ${d.base} is missing; this file cannot be restored`);
  }
  try {
    const layout = readMappedRamLayout(path, header.streamOffset);
    ramBlocks = layout.blocks;
    if (stream.structureCrc32 !== undefined && structureCrc32(path, header.streamOffset, layout) !== stream.structureCrc32) {
      problems.push("corrupted: QEMU's stream headers or device state changed since the save (checksum mismatch)");
    }
    if (opts.verify && problems.length === 0) digests = await checkDigests(path, { header, layout, fileSize: stat.size });
  } catch (err) {
    problems.push((err as Error).message);
  }
  return {
    path,
    state: header.state,
    problems,
    logicalBytes: stat.size,
    allocatedBytes: allocatedBytes(stat),
    metadata: header.metadata,
    ramBlocks,
    pagesPresentBytes: ramBlocks.reduce((s, b) => s + b.pagesPresent * b.pageSize, 0),
    digests,
  };
}

export function formatInspect(r: InspectReport): string {
  const m = r.metadata;
  const lines = [
    `file:        ${r.path}`,
    `state:       ${r.state}${r.problems.length ? ` — ${r.problems.join('; ')}` : ''}`,
    `vm:          ${[m.vm.namespace, m.vm.name].filter(Boolean).join('/') || '-'} (QMP ${m.vm.qmpSocket})`,
    `snapshot:    ${m.snapshot ? `VMSnapshot ${m.snapshot.namespace}/${m.snapshot.name} (uid ${m.snapshot.uid})` : '- (saved by the CLI)'}`,
    `format:      version ${m.formatVersion}, ${m.stream.structureMac ? "header and stream structure MACed with the node agent's key (checked by the agent, not here)" : 'no MAC (the agent refuses it; the CLI reads it)'}`,
    `qemu:        ${m.qemu.version}, machine ${m.qemu.machine}`,
    `ram:         ${m.ram.bytes} bytes${m.ram.mainBlockId ? `, main block ${m.ram.mainBlockId}` : ''}`,
    `capture:     ${m.capture.mode}, was ${m.capture.wasRunning ? 'running' : 'paused'}, then ${m.capture.after}`,
    `stream:      offset ${m.stream.offset}, ${m.stream.channels} channels, direct I/O ${m.stream.directIO ? 'on' : 'off'}` +
      (m.stream.directIOReason ? ` (${m.stream.directIOReason})` : ''),
    `size:        ${r.logicalBytes} bytes logical, ${r.allocatedBytes} allocated, ${r.pagesPresentBytes} in RAM pages`,
    `created:     ${m.createdAt}${m.completedAt ? `, completed ${m.completedAt}` : ''}`,
  ];
  if (r.digests) lines.push(`ram digests: ok (${r.digests.algorithm}, ${r.digests.regions} regions, ${r.digests.bytesHashed} bytes)`);
  if (m.stats) lines.push(`save:        ${m.stats.durationMs} ms, ${m.stats.throughputMiBps} MiB/s, VM paused ${m.stats.vmPausedMs} ms`);
  for (const d of m.disks ?? []) {
    lines.push(`disk:        ${d.device}: ${d.argvPath} frozen as ${d.base} (${d.baseFormat}, ${d.virtualSize} bytes)${d.overlay ? `, the VM went on in ${d.overlay}` : ''}`);
  }
  lines.push('ram blocks:');
  for (const b of r.ramBlocks) {
    lines.push(`  ${b.id.padEnd(24)} ${String(b.usedLength).padStart(12)} bytes  page ${b.pageSize}  pages ${b.pagesPresent}/${b.pages} present  at ${b.pagesOffset}`);
  }
  return lines.join('\n') + '\n';
}
