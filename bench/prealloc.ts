// Preallocating the guest's RAM of an eager restore into a QEMU that vmsnap
// launches, before the load: opt-in (RestoreOptions.prealloc), for the bench's
// comparison. By default the multifd channels fault the RAM in themselves,
// beside their reads, and only the pages the file holds: preallocation touches
// every page, present or not, and does it before the first read, so on nodes
// where first touching memory is slow its whole cost comes on top of the load
// (docs/benchmarks.md). Only considered when the snapshot holds most of the RAM.
import os from 'node:os';
import type { RamBlockInfo } from '../snapshot-file/mapped-ram.js';
import { findMainRamBackend, withMainRamBackend } from './main-ram.js';
import { getOption, isOn, setOption, type QemuOptions } from './lazy/qemu-options.js';

/** Preallocate when at least this share of the main block's pages is in the file. */
export const PREALLOC_MIN_PRESENT = 0.5;

export type PreallocPlan = { prealloc: true; argv: string[]; threads: number } | { prealloc: false; reason: string };

/** The relaunch argv with the main RAM block preallocated, or why it stays as it is. */
export function planPreallocArgv(argv: string[], main: Pick<RamBlockInfo, 'id' | 'usedLength' | 'pages' | 'pagesPresent'>, channels: number): PreallocPlan {
  const present = main.pages > 0 ? main.pagesPresent / main.pages : 0;
  if (present < PREALLOC_MIN_PRESENT) {
    return { prealloc: false, reason: `the snapshot holds ${(present * 100).toFixed(0)}% of the RAM's pages (preallocation pays from ${PREALLOC_MIN_PRESENT * 100}%)` };
  }
  if (argv.includes('-mem-path')) return { prealloc: false, reason: 'the VM keeps its RAM in files (-mem-path)' };
  const threads = Math.max(1, Math.min(channels, os.availableParallelism()));
  const backend = findMainRamBackend(argv, main.id);
  if (backend.kind === 'unknown') return { prealloc: false, reason: backend.reason };
  if (backend.kind === 'object') {
    const o = backend.options;
    // Shared or file-backed RAM belongs to others as well (and hugepage files are the user's own choice).
    if (backend.type !== 'memory-backend-ram' || isOn(getOption(o, 'share'))) {
      return { prealloc: false, reason: `the VM's RAM backend is ${backend.type}${isOn(getOption(o, 'share')) ? ' share=on' : ''}` };
    }
  }
  const o: QemuOptions =
    backend.kind === 'object' ? backend.options : { props: [['qom-type', 'memory-backend-ram'], ['id', main.id], ['size', String(main.usedLength)]], json: false };
  setOption(o, 'prealloc', o.json ? 'true' : 'on');
  setOption(o, 'prealloc-threads', String(threads));
  return { prealloc: true, threads, argv: withMainRamBackend(argv, backend, o, main.id) };
}
