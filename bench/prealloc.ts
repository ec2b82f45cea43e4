// The bench's alternative to a launched eager restore: the guest RAM preallocated before the load
// (prealloc=on), against the product's way, where the multifd channels fault in only the pages
// the file holds, beside their reads. Preallocation touches every page, present or not, before the
// first read, so on nodes where first touching memory is slow its whole cost comes on top of the
// load (docs/benchmarks.md). It reaches the engine as a rewrite of the launch command line
// (RestoreHooks.launchArgv): the product's options know nothing of it, and the comparison stays
// measurable (`prealloc+load ms`).
import os from 'node:os';
import type { VerifiedSnapshot } from '../agent/src/snapshot-file/verify.js';
import type { RamBlockInfo } from '../agent/src/snapshot-file/mapped-ram.js';
import { findMainRamBackend, withMainRamBackend } from '../agent/src/engine/main-ram.js';
import { getOption, isOn, setOption, type QemuOptions } from '../agent/src/engine/lazy/qemu-options.js';

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

/**
 * RestoreHooks.launchArgv: the launch command line with the main RAM block preallocated; `onSkip`
 * hears why not when the plan keeps it as it is (the restore then runs as the product's).
 */
export function preallocatedLaunch(onSkip: (reason: string) => void = () => undefined) {
  return (argv: string[], snapshot: VerifiedSnapshot, channels: number): string[] => {
    const id = snapshot.header.metadata.ram.mainBlockId;
    const main = snapshot.layout.blocks.find((b) => b.id === id);
    const plan: PreallocPlan = main ? planPreallocArgv(argv, main, channels) : { prealloc: false, reason: 'the snapshot does not record its main RAM block' };
    if (plan.prealloc) return plan.argv;
    onSkip(plan.reason);
    return argv;
  };
}
