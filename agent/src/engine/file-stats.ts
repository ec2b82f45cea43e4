import type fs from 'node:fs';

/** Bytes the file occupies on disk (snapshot files are sparse). */
export function allocatedBytes(stat: fs.Stats): number {
  return stat.blocks * 512;
}
