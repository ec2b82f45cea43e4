// Decides whether a restore can be lazy: the conditions on the snapshot and on
// how the target QEMU comes to be, then the command-line plan. Anything that
// stands in the way is a reason, and the restore goes on eagerly.
import type { MappedRamLayout, RamBlockInfo } from '../../snapshot-file/mapped-ram.js';
import type { SnapshotMetadata } from '../../snapshot-file/metadata.js';
import { planLazyArgv } from './plan.js';

/** x86-64's base page: a block saved with larger pages lives in hugepages. */
const HOST_PAGE_SIZE = 4096;

export type LazyDecision = { lazy: true; argv: string[]; main: RamBlockInfo } | { lazy: false; reason: string };

/** What the decision reads of a snapshot: its RAM record and its stream's RAM layout. */
export interface LazySource {
  header: { metadata: Pick<SnapshotMetadata, 'ram'> };
  layout: MappedRamLayout;
}

/**
 * `relaunchedArgv`: the command line the restore would launch (undefined when
 * it attaches to a QEMU started by someone else). `file`: the snapshot's real path.
 */
export function decideLazy(snapshot: LazySource, file: string, relaunchedArgv: string[] | undefined): LazyDecision {
  if (!relaunchedArgv) {
    return { lazy: false, reason: 'the target QEMU was started outside vmsnap (no --launch): its RAM already exists, so the file can only be loaded into it' };
  }
  const meta = snapshot.header.metadata;
  const id = meta.ram.mainBlockId;
  if (!id) return { lazy: false, reason: 'the snapshot does not record which RAM block is the main one (saved by an older vmsnap)' };
  const main = snapshot.layout.blocks.find((b) => b.id === id);
  if (!main) return { lazy: false, reason: `the snapshot's stream has no RAM block '${id}' (its recorded main block)` };
  if (main.pageSize !== HOST_PAGE_SIZE) {
    return { lazy: false, reason: `the main RAM block '${id}' has ${main.pageSize}-byte pages (hugepages): a file mapping cannot back it` };
  }
  if (main.usedLength !== meta.ram.bytes) {
    return { lazy: false, reason: `the main RAM block '${id}' holds ${main.usedLength} of the VM's ${meta.ram.bytes} RAM bytes (memory in several blocks)` };
  }
  const plan = planLazyArgv(relaunchedArgv, { file, blockId: id, size: main.usedLength, offset: main.pagesOffset });
  return plan.lazy ? { lazy: true, argv: plan.argv, main } : plan;
}
