// Phases and conditions of VMSnapshot and VMRestore, for the operator and the agent alike: one
// place decides which conditions a phase implies, so every writer tells the same story.
// Condition bookkeeping as Kubernetes tools expect it: one entry per type, and
// lastTransitionTime moves only when the status actually changes.
import { ConditionType, Phase, type Condition, type ConditionStatus } from './common.js';

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

/** What a status writer knows about the object it writes. */
export interface PhaseOwner {
  metadata: { generation?: number };
  status?: { conditions?: Condition[] };
}

/** Longest condition message written (the schema allows 32 KiB; a message is for people). */
export const MAX_CONDITION_MESSAGE = 4096;

/**
 * The three conditions a phase implies, each with `reason`:
 * Pending/InProgress: Ready False, Progressing True (the message says what it waits for or does), Failed False;
 * Succeeded: Ready True (with the message), Progressing False, Failed False;
 * Failed: Ready False, Progressing False, Failed True (with the message).
 */
export function phaseConditions(obj: PhaseOwner, phase: Phase, reason: string, message: string, now: Date): Condition[] {
  const text = message.slice(0, MAX_CONDITION_MESSAGE);
  const generation = obj.metadata.generation;
  const active = phase === Phase.Pending || phase === Phase.InProgress;
  const set = (list: Condition[] | undefined, type: ConditionType, status: ConditionStatus, msg: string) =>
    setCondition(list, { type, status, reason, message: msg, observedGeneration: generation }, now);
  let list = set(obj.status?.conditions, ConditionType.Ready, phase === Phase.Succeeded ? 'True' : 'False', text);
  list = set(list, ConditionType.Progressing, active ? 'True' : 'False', active ? text : '');
  return set(list, ConditionType.Failed, phase === Phase.Failed ? 'True' : 'False', phase === Phase.Failed ? text : '');
}

/** A status patch setting the phase, its conditions and observedGeneration together, plus `extra`. */
export function phaseStatus<E extends object = Record<string, never>>(
  obj: PhaseOwner,
  phase: Phase,
  reason: string,
  message: string,
  now: Date,
  extra?: E,
): { phase: Phase; observedGeneration?: number; conditions: Condition[] } & E {
  return {
    phase,
    observedGeneration: obj.metadata.generation,
    conditions: phaseConditions(obj, phase, reason, message, now),
    ...(extra ?? ({} as E)),
  };
}

/** The failure's fields: phase Failed with its conditions, status.error and completionTime. */
export function failedStatus(obj: PhaseOwner, reason: string, message: string, now: Date) {
  const text = message.slice(0, MAX_CONDITION_MESSAGE);
  return phaseStatus(obj, Phase.Failed, reason, text, now, { completionTime: now.toISOString(), error: { time: now.toISOString(), message: text } });
}

/** The reason and message of what an active object waits for or does (the Progressing condition). */
export function progressingOf(conditions: readonly Condition[] | undefined): { reason?: string; message?: string } {
  const c = findCondition(conditions, ConditionType.Progressing) ?? findCondition(conditions, ConditionType.Ready);
  return { reason: c?.reason, message: c?.message };
}
