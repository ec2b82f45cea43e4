// What the agent does about one VMSnapshot or VMRestore of its node, as data: the object as seen,
// what the dispatcher holds in memory about it, in; one action and its reason, out. No I/O here:
// work.ts executes the actions. Which queued runs take the node's free slots is decided here too.
import { NODE_LABEL, Phase, isAssignedTo, type VMRestore, type VMSnapshot } from '../../../api/index.js';
import { pickWork, type QueuedWork } from './fair-share.js';
import { vmKey } from './vm-locks.js';

export type Kind = 'snapshot' | 'restore';
export type Work = { kind: 'snapshot'; obj: VMSnapshot } | { kind: 'restore'; obj: VMRestore };
/** run: claim, then save or restore; recover: what a previous agent left InProgress; cleanup: what a failure left. */
export type Mode = 'run' | 'recover' | 'cleanup';

/** The object as the watch delivered it: `work` is absent when it does not parse. */
export interface Seen {
  uid: string;
  deleting: boolean;
  phase?: string;
  work?: Work;
}

/** What the dispatcher holds in memory about the object. */
export interface Held {
  job?: { mode: Mode; cancelled: boolean };
  /** Claimed, recovered or cleaned up by this process: never again. */
  handled: boolean;
  /** A file deletion in flight or done. */
  deletion?: 'busy' | 'done';
  /** A final status waiting to be written again. */
  unwritten: boolean;
}

export interface NodeView {
  name: string;
  stopping: boolean;
  /** Does a Failed snapshot still have its file on the node (asked only when it matters)? */
  leftoverFile: (snap: VMSnapshot) => boolean;
}

export type Action =
  | { do: 'cancel'; cause: 'deleted' | 'failed'; why: string }
  | { do: 'write'; why: string }
  | { do: 'recover'; why: string }
  | { do: 'cleanup'; why: string }
  | { do: 'delete-file'; why: string }
  /** Wait for a slot; `decideRuns` picks which queued work is claimed and run. */
  | { do: 'queue'; why: string }
  /** `settle`: remember it as handled; `forget`: drop what memory holds about it (final, nothing runs). */
  | { do: 'nothing'; why: string; settle?: true; forget?: true };

export function decide(seen: Seen, held: Held, node: NodeView): Action {
  if (held.job) {
    if (held.job.cancelled) return { do: 'nothing', why: 'its job is already cancelled' };
    if (seen.deleting) return { do: 'cancel', cause: 'deleted', why: 'deleted while its job runs' };
    if (seen.phase === Phase.Failed) return { do: 'cancel', cause: 'failed', why: 'the operator failed it while its job runs' };
    return { do: 'nothing', why: `its ${held.job.mode} job runs` };
  }
  if (node.stopping) return { do: 'nothing', why: 'the agent is stopping' };
  if (held.unwritten) return { do: 'write', why: 'its final status is not written yet' };
  const work = seen.work;
  if (!work) return { do: 'nothing', why: 'it does not parse' };
  const { obj } = work;
  const mine = obj.status?.nodeName === node.name && obj.metadata.labels?.[NODE_LABEL] === node.name;
  if (mine && !held.handled) {
    if (obj.status?.phase === Phase.InProgress) return { do: 'recover', why: 'InProgress with no job here: a previous agent left it' };
    if (obj.status?.phase === Phase.Failed) {
      // A failure that happened while no agent watched may have left a paused VM or a file behind.
      if (work.kind === 'restore') return { do: 'cleanup', why: 'Failed: its half-loaded QEMU may still wait' };
      if (node.leftoverFile(work.obj)) return { do: 'cleanup', why: 'Failed with its file still on the node' };
      return { do: 'nothing', why: 'Failed and nothing left behind', settle: true };
    }
  }
  if (work.kind === 'snapshot' && seen.deleting) {
    if (held.deletion) return { do: 'nothing', why: `its file deletion is ${held.deletion}` };
    return { do: 'delete-file', why: 'deleted' };
  }
  if (!seen.deleting && isAssignedTo(obj, node.name) && !held.handled) return { do: 'queue', why: 'assigned to this node, not claimed yet' };
  // Final with no job: what memory holds about it is no longer needed (a Failed one keeps `handled`: its clean-up runs once).
  if (obj.status?.phase === Phase.Succeeded && !seen.deleting && !held.deletion) return { do: 'nothing', why: 'Succeeded', forget: true };
  return { do: 'nothing', why: held.handled ? 'already handled by this agent' : 'not for this agent now' };
}

/** The VM a piece of work holds: one job per VM at a time. */
export function lockKey(work: Work): string {
  const ns = work.obj.metadata.namespace ?? '';
  return work.kind === 'snapshot' ? vmKey(ns, work.obj.spec.vmName) : vmKey(ns, work.obj.status?.effective?.targetVMName ?? work.obj.spec.targetVMName ?? '');
}

export interface RunState {
  /** VM key -> uid of the job that holds it. */
  reserved: ReadonlyMap<string, string>;
  /** Namespaces of the runs and recoveries going on (clean-ups take no slot). */
  running: readonly string[];
  total: number;
  perNamespace: number;
  /** namespace -> when it last got a slot. */
  lastServed: ReadonlyMap<string, number>;
}

/**
 * The queued work to claim and run now, in order: the oldest work of each free VM (a VM held by
 * another job waits for that job's end), shared between namespaces by fair-share.ts.
 */
export function decideRuns(queue: ReadonlyMap<string, Work>, state: RunState): QueuedWork[] {
  const byVm = new Map<string, QueuedWork>();
  for (const [uid, work] of queue) {
    const key = lockKey(work);
    const holder = state.reserved.get(key);
    if (holder !== undefined && holder !== uid) continue;
    const c: QueuedWork = { id: uid, namespace: work.obj.metadata.namespace ?? '', since: String(work.obj.metadata.creationTimestamp ?? '') };
    const other = byVm.get(key);
    if (!other || c.since < other.since || (c.since === other.since && c.id < other.id)) byVm.set(key, c);
  }
  return pickWork([...byVm.values()], state);
}
