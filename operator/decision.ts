// What a reconcile decides, as data: patches to apply, events to record and
// when to look again. Reconcilers are pure functions that return these.
import { setCondition, type Condition, type ConditionStatus, type Repository } from '../api/index.js';
import { NODE_LABEL, type Reason } from '../api/protocol.js';
import type { PodView } from './vm-pod-record.js';

export interface EventSpec {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface Decision {
  /** Merge patch for the status subresource (the `status` object only). */
  status?: Record<string, unknown>;
  /** Merge patch for metadata (labels, finalizers), sent with the observed resourceVersion. */
  metadata?: Record<string, unknown>;
  events: EventSpec[];
  /** Reconcile again after this many milliseconds (deadlines, waiting). */
  requeueAfterMs?: number;
  /** An operation on `vmKey` was handed to `node` (the controller remembers it until the informer catches up). */
  assigned?: { vmKey: string; node: string };
  /** A snapshot's copy in its repository to remove before the metadata patch (which then releases the finalizer). */
  remoteDelete?: { repository: Repository; prefix: string };
  /** The pod of a copy or a wake: made, deleted (only that uid), or handed to the user (its owner reference dropped). */
  pod?:
    | { create: PodView }
    | { delete: { namespace: string; name: string; uid: string } }
    | { release: { namespace: string; name: string; resourceVersion?: string; ownerReferences: NonNullable<PodView['metadata']['ownerReferences']> } };
}

export const nothing = (requeueAfterMs?: number): Decision => ({ events: [], requeueAfterMs });

interface HasStatus {
  metadata: { generation?: number };
  status?: { conditions?: Condition[]; phase?: string };
}

/** A status patch that sets phase and the Ready condition together. */
export function phasePatch(
  obj: HasStatus,
  phase: 'Pending' | 'InProgress' | 'Succeeded' | 'Failed',
  ready: ConditionStatus,
  reason: Reason,
  message: string,
  now: Date,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    phase,
    observedGeneration: obj.metadata.generation,
    conditions: setCondition(obj.status?.conditions, { type: 'Ready', status: ready, reason, message, observedGeneration: obj.metadata.generation }, now),
    ...extra,
  };
}

/** Failed with the message in status.error, on Ready and in a Warning event. */
export function fail(obj: HasStatus, reason: Reason, message: string, now: Date): Decision {
  return {
    status: phasePatch(obj, 'Failed', 'False', reason, message, now, { error: { time: now.toISOString(), message }, completionTime: now.toISOString() }),
    events: [{ type: 'Warning', reason, message }],
  };
}

/** Still Pending for `reason`: patched only when the reason or message changed, to spare the API server. */
export function wait(obj: HasStatus, reason: Reason, message: string, now: Date, requeueAfterMs: number): Decision {
  const ready = obj.status?.conditions?.find((c) => c.type === 'Ready');
  if (obj.status?.phase === 'Pending' && ready?.reason === reason && ready?.message === message) return nothing(requeueAfterMs);
  return {
    status: phasePatch(obj, 'Pending', 'False', reason, message, now),
    events: ready?.reason === reason ? [] : [{ type: 'Normal', reason, message }],
    requeueAfterMs,
  };
}

/** Hands the object to a node: status first (the agent needs it), then the label the agent watches. */
export function assign(
  obj: HasStatus,
  node: string,
  vmKey: string,
  message: string,
  now: Date,
  extraStatus: Record<string, unknown>,
): Decision {
  return {
    status: phasePatch(obj, 'Pending', 'False', 'Assigned', message, now, { nodeName: node, ...extraStatus }),
    metadata: { labels: { [NODE_LABEL]: node } },
    events: [{ type: 'Normal', reason: 'Assigned', message }],
    assigned: { vmKey, node },
  };
}
