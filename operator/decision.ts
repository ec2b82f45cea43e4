// What a reconcile decides, as data: patches to apply, events to record and
// when to look again. Reconcilers are pure functions that return these.
import { ConditionType, Phase, failedStatus, phaseStatus, progressingOf, type PhaseOwner, type Repository } from '../api/index.js';
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

type HasStatus = PhaseOwner & { status?: { phase?: string } };

/** A status patch that sets the phase and its conditions together (see api/conditions.ts). */
export function phasePatch(obj: HasStatus, phase: Phase, reason: Reason, message: string, now: Date, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return phaseStatus(obj, phase, reason, message, now, extra);
}

/** Failed with the message in status.error, on the Failed condition and in a Warning event. */
export function fail(obj: HasStatus, reason: Reason, message: string, now: Date): Decision {
  return { status: failedStatus(obj, reason, message, now), events: [{ type: 'Warning', reason, message }] };
}

/**
 * Still Pending for `reason` (the Progressing condition says what it waits for): patched only when
 * the reason or message changed, to spare the API server; an event each time the reason changes.
 */
export function wait(obj: HasStatus, reason: Reason, message: string, now: Date, requeueAfterMs: number, eventType: EventSpec['type'] = 'Normal'): Decision {
  const current = progressingOf(obj.status?.conditions);
  const sameConditions = obj.status?.conditions?.length === Object.keys(ConditionType).length;
  if (obj.status?.phase === Phase.Pending && sameConditions && current.reason === reason && current.message === message) return nothing(requeueAfterMs);
  return {
    status: phasePatch(obj, Phase.Pending, reason, message, now),
    events: current.reason === reason ? [] : [{ type: eventType, reason, message }],
    requeueAfterMs,
  };
}

/**
 * Past spec.failureDeadline: Failed, saying what it was still waiting for, so a user who applied a
 * VMSnapshot for a VM that never came sees why ("VM "web" not found ...").
 */
export function deadlineExceeded(obj: HasStatus & { spec: { failureDeadline?: string } }, work: string, deadline: string, now: Date): Decision {
  const waiting = obj.status?.phase === Phase.Pending ? progressingOf(obj.status?.conditions) : {};
  const why = waiting.message ? `; it was waiting: ${waiting.message}` : '';
  return fail(obj, 'DeadlineExceeded', `the ${work} did not finish within spec.failureDeadline (${deadline})${why}`, now);
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
    status: phasePatch(obj, Phase.Pending, 'Assigned', message, now, { nodeName: node, ...extraStatus }),
    metadata: { labels: { [NODE_LABEL]: node } },
    events: [{ type: 'Normal', reason: 'Assigned', message }],
    assigned: { vmKey, node },
  };
}
