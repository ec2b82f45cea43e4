// A deleted VMSnapshot that is not running: with deletionPolicy Delete its
// file goes, then status.fileDeleted tells the operator to drop its finalizer.
// Retain needs nothing from the agent.
import fs from 'node:fs';
import { Phase, effectiveDeletionPolicy, type VMSnapshot } from '../../../api/index.js';
import type { Completion } from './completion.js';
import type { AgentContext } from './context.js';
import { isReallyUnder } from './paths.js';
import { digestsPath } from '../snapshot-file/digests.js';
import { mergeLayersOfDeleted } from './disk-layers.js';
import { readHeader } from '../snapshot-file/read.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';
import { qemusMapping } from '../engine/index.js';
import { headerTrust } from './header-trust.js';

function metadataOrUndefined(ctx: AgentContext, snap: VMSnapshot, file: string): SnapshotMetadata | undefined {
  try {
    // With the key: the disks a merge acts on must be what this agent recorded for this VMSnapshot.
    return readHeader(file, headerTrust(ctx.config.storageRoot, snap)).metadata;
  } catch {
    return undefined; // a damaged, foreign or unauthenticated file: nothing it froze is known, so nothing is merged
  }
}

export type DeletionDecision =
  | { action: 'none'; why: string }
  | { action: 'wait'; why: string }
  | { action: 'refuse'; path: string; why: string }
  | { action: 'delete'; path?: string };

/** Pure: what to do for a VMSnapshot with a deletionTimestamp and no save running here. */
export function decideDeletion(snap: VMSnapshot, storageRoot: string, filesInUse: ReadonlyMap<string, number>): DeletionDecision {
  if (!snap.metadata.deletionTimestamp) return { action: 'none', why: 'not being deleted' };
  if (snap.status?.fileDeleted) return { action: 'none', why: 'the file is already deleted' };
  if (effectiveDeletionPolicy(snap) === 'Retain') return { action: 'none', why: 'deletionPolicy Retain keeps the file' };
  if (snap.status?.phase === Phase.InProgress) return { action: 'wait', why: 'the save is still in progress' };
  const file = snap.status?.file?.path;
  if (!file) return { action: 'delete' }; // never had a file: nothing to remove, but say so
  if (filesInUse.has(file)) return { action: 'wait', why: `a restore is reading ${file}` };
  if (!isReallyUnder(storageRoot, file)) return { action: 'refuse', path: file, why: `${file} is not inside the agent's storage root ${storageRoot}` };
  return { action: 'delete', path: file };
}

/**
 * Acts on the decision: undefined when there is nothing to do now, else the
 * removal, resolving to the completion to write.
 */
export function deleteSnapshotFile(ctx: AgentContext, snap: VMSnapshot): Promise<Completion> | undefined {
  const d = decideDeletion(snap, ctx.config.storageRoot, ctx.filesInUse);
  switch (d.action) {
    case 'none':
    case 'wait':
      return undefined;
    case 'refuse':
      return Promise.resolve({
        status: {},
        skipStatus: true,
        event: { type: 'Warning', reason: 'FileNotDeleted', message: `not removing ${d.path}: ${d.why}; remove it by hand, then remove the finalizer` },
      });
    case 'delete':
      return removeSnapshotFile(ctx, snap, d.path);
  }
}

async function removeSnapshotFile(ctx: AgentContext, snap: VMSnapshot, file: string | undefined): Promise<Completion> {
  if (!file) return { status: { fileDeleted: true }, event: { type: 'Normal', reason: 'FileDeleted', message: 'deletionPolicy Delete: the snapshot had no file' } };
  const existed = fs.existsSync(file);
  const meta = existed ? metadataOrUndefined(ctx, snap, file) : undefined;
  // Lazily restored VMs map the file: unlinking leaves their mappings intact, and the
  // kernel frees the space when the last of them exits.
  const mappers = existed ? qemusMapping(fs.realpathSync(file)) : [];
  // Not rmSync: freeing the extents of a file of GiBs takes the kernel about 150 ms a GiB on
  // our disks, and the agent's event loop (claims, the QMP of running saves) must not wait.
  await fs.promises.rm(file, { force: true });
  // Its digests, and a half-written digests file left by an agent that died during the pass.
  for (const extra of [digestsPath(file), `${digestsPath(file)}.tmp`]) await fs.promises.rm(extra, { force: true });
  if (meta?.disks?.length) void mergeLayersOfDeleted(ctx, snap, meta);
  let message = existed ? `deletionPolicy Delete: removed ${file} from node ${ctx.nodeName}` : `deletionPolicy Delete: ${file} was already gone`;
  if (mappers.length > 0) {
    message += `; ${mappers.length} lazily restored VM(s) still run on it (QEMU pid ${mappers.join(', ')}): its space is freed when they exit`;
  }
  return { status: { fileDeleted: true }, event: { type: 'Normal', reason: 'FileDeleted', message } };
}
