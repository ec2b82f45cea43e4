// Condition bookkeeping as Kubernetes tools expect it: one entry per type, and
// lastTransitionTime moves only when the status actually changes.
import type { Condition, ConditionStatus } from './common.js';

export interface ConditionUpdate {
  type: string;
  status: ConditionStatus;
  reason: string;
  message?: string;
  observedGeneration?: number;
}

export function findCondition(conditions: readonly Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** A new list with `update` applied; the input is not modified. */
export function setCondition(conditions: readonly Condition[] | undefined, update: ConditionUpdate, now: Date = new Date()): Condition[] {
  const list = conditions ?? [];
  const previous = findCondition(list, update.type);
  const next: Condition = {
    type: update.type,
    status: update.status,
    reason: update.reason,
    message: update.message ?? '',
    lastTransitionTime: previous && previous.status === update.status ? previous.lastTransitionTime : now.toISOString(),
    ...(update.observedGeneration !== undefined ? { observedGeneration: update.observedGeneration } : {}),
  };
  return previous ? list.map((c) => (c.type === update.type ? next : c)) : [...list, next];
}
