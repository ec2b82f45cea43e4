// The steps of one job, apart from when and whether it runs (work.ts): claiming the object, then
// the save, restore, recovery or clean-up it stands for.
import type { VMRestoreStatus, VMSnapshotStatus } from '../../../api/index.js';
import { statusCode, type ResourceName } from '../../../kube/client.js';
import type { Completion } from './completion.js';
import type { AgentContext } from './context.js';
import type { Kind, Mode, Work } from './decide.js';
import { cleanUpFailedRestore, cleanUpFailedSnapshot, recoverRestore, recoverSnapshot } from './recovery.js';
import { runRestore } from './restore-runner.js';
import type { PodRestorePrep } from './pod-restore.js';
import { runSnapshot, snapshotClaimExtra } from './snapshot-runner.js';
import { claimPatch } from './status.js';

export const RESOURCE: Record<Kind, ResourceName> = { snapshot: 'vmSnapshot', restore: 'vmRestore' };
export const KIND_NAME: Record<Kind, string> = { snapshot: 'VMSnapshot', restore: 'VMRestore' };

/** The job itself: the save or restore, the recovery, or the clean-up. */
export function perform(
  ctx: AgentContext,
  work: Work,
  mode: Mode,
  signal: AbortSignal,
  /** A restore's file check and pod lookup, started while the claim was in flight. */
  prepared?: Promise<PodRestorePrep>,
): Promise<Completion | undefined> {
  if (work.kind === 'snapshot') {
    if (mode === 'run') return runSnapshot(ctx, work.obj, signal);
    return mode === 'recover' ? recoverSnapshot(ctx, work.obj) : cleanUpFailedSnapshot(ctx, work.obj);
  }
  if (mode === 'run') return runRestore(ctx, work.obj, signal, prepared);
  return mode === 'recover' ? recoverRestore(ctx, work.obj, signal) : cleanUpFailedRestore(ctx, work.obj);
}

/** Pending -> InProgress, guarded by the resourceVersion seen: a 409 means someone changed it first. */
export async function claim(ctx: AgentContext, work: Work, log: AgentContext['log']): Promise<boolean> {
  const { obj } = work;
  const ref = { namespace: obj.metadata.namespace!, name: obj.metadata.name! };
  const message = `node ${ctx.nodeName} is ${work.kind === 'snapshot' ? 'saving' : 'restoring'} the VM`;
  try {
    const body =
      work.kind === 'snapshot'
        ? claimPatch<VMSnapshotStatus>(work.obj, message, new Date(), snapshotClaimExtra(ctx, work.obj))
        : claimPatch<VMRestoreStatus>(work.obj, message, new Date());
    await ctx.kube.patchStatus(RESOURCE[work.kind], ref, body);
    return true;
  } catch (err) {
    const code = statusCode(err);
    if (code === 409) log.debug('changed since it was seen; not claimed');
    else if (code !== 404) log.warn({ err: String(err) }, 'cannot claim; trying again later');
    return false;
  }
}
