// Background prefetch for a lazily restored VM: a detached, low-priority
// process asks the kernel to read the main RAM block's present pages into the
// page cache (posix_fadvise WILLNEED, no copying), so the guest's page faults
// find them in memory instead of waiting for the disk one fault at a time.
// Detached because it outlives the CLI or agent that started it; it ends by
// itself once the whole region has been requested. Pages stay shared in the
// page cache, so several VMs restored from one file warm up once.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../native.js';
import { packageRoot } from '../../package-root.js';
import type { RamBlockInfo } from '../../snapshot-file/mapped-ram.js';

/** The block fields the prefetch needs, passed on its command line. */
export type PrefetchBlock = Pick<RamBlockInfo, 'id' | 'usedLength' | 'pageSize' | 'bitmapOffset' | 'pagesOffset' | 'pages'>;

const SCRIPT = 'dist/agent/src/engine/lazy/prefetch-main.js';

/** Starts the prefetch; returns its pid, or undefined with the reason when it could not start. */
export function startPrefetch(file: string, block: PrefetchBlock): { pid?: number; reason?: string } {
  const script = path.join(packageRoot(), SCRIPT);
  if (!fs.existsSync(script)) return { reason: `${script} is missing (run npm run build)` };
  if (typeof native().fadviseWillNeed !== 'function') return { reason: 'the native addon predates the prefetch: rebuild it (npm install)' };
  const child = spawn(process.execPath, [script, file, JSON.stringify(block)], { detached: true, stdio: 'ignore' });
  child.on('error', () => undefined);
  child.unref();
  if (child.pid === undefined) return { reason: 'the prefetch process did not start' };
  try {
    os.setPriority(child.pid, 10); // behind the VMs it serves
  } catch {
    // not allowed to lower it further: it runs at normal priority
  }
  return { pid: child.pid };
}
