import type fs from 'node:fs';

/** Bytes the file occupies on disk (snapshot files are sparse). */
export function allocatedBytes(stat: fs.Stats): number {
  return stat.blocks * 512;
}

export function throughputMiBps(bytes: number, durationMs: number): number {
  if (durationMs <= 0) return 0;
  return Math.round((bytes / (1 << 20) / (durationMs / 1000)) * 10) / 10;
}
