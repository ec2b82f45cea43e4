// VMSnapshotSchedule: observed state in, decision out. No I/O here.
// A run is due when the cron expression has a time after status.lastScheduleTime (else the
// schedule's creation) that is not in the future; only the most recent such time is taken, once.
// Snapshot names are the schedule, the VM and that time, so a restarted operator (or a status
// patch that lost a race) can never take the same run twice: the second create is refused.
import { createHash } from 'node:crypto';
import {
  API_VERSION,
  DEFAULT_KEEP_FAILED,
  SCHEDULED_TIME_ANNOTATION,
  SCHEDULE_LABEL,
  VMSNAPSHOTSCHEDULE_KIND,
  VMSNAPSHOT_KIND,
  VM_LABEL,
  Phase,
  compileSchedule,
  parseDurationMs,
  setCondition,
  type LabelSelector,
  type VMSnapshot,
  type VMSnapshotInput,
  type VMSnapshotSchedule,
  type VMSnapshotScheduleStatus,
} from '../api/index.js';
import { isTerminal } from '../api/protocol.js';
import type { EventSpec } from './decision.js';
import type { PodView } from './vm-pod-record.js';
import { timeOf } from './world.js';

export interface ScheduleWorld {
  snapshots: readonly VMSnapshot[];
  /** VM pods (labelled vmsnap.io/vm) in every namespace. */
  pods: readonly PodView[];
}

export interface ScheduleDecision {
  /** Merge patch for the status subresource (null removes a field); absent when nothing changed. */
  status?: Record<string, unknown>;
  /** VMSnapshots to create (a 409 means an earlier attempt made it: fine). */
  create: VMSnapshotInput[];
  /** VMSnapshots to delete, only if still the object with that uid. */
  delete: Array<{ name: string; uid: string; why: string }>;
  events: EventSpec[];
  requeueAfterMs?: number;
}

/** Looked at again at least this often (a VM pod matching the selector appears, a clock jump). */
const MAX_REQUEUE_MS = 5 * 60_000;

/** The name of the VMSnapshot of `vm` for the run at `time`: at most 253 characters, always the same. */
export function scheduledSnapshotName(schedule: string, vm: string, time: Date): string {
  const stamp = String(Math.floor(time.getTime() / 1000));
  const name = `${schedule}-${vm}-${stamp}`;
  if (name.length <= 253) return name;
  const hash = createHash('sha256').update(`${schedule}/${vm}`).digest('hex').slice(0, 10);
  return `${schedule.slice(0, 253 - stamp.length - hash.length - 2)}-${hash}-${stamp}`.replace(/-+/g, '-');
}

/** Does a pod's label set satisfy a standard label selector? (An empty selector matches all.) */
export function matchesSelector(labels: Record<string, string> | undefined, sel: LabelSelector): boolean {
  const l = labels ?? {};
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (l[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(l, e.key);
    const values = e.values ?? [];
    if (e.operator === 'In' && !(has && values.includes(l[e.key]!))) return false;
    if (e.operator === 'NotIn' && has && values.includes(l[e.key]!)) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

/** The VMs a schedule snapshots: spec.vmNames, and the VM of every pod of its namespace the selector matches. */
export function selectedVMs(sched: VMSnapshotSchedule, pods: readonly PodView[]): string[] {
  const ns = sched.metadata.namespace;
  const vms = new Set(sched.spec.vmNames ?? []);
  const sel = sched.spec.vmSelector;
  if (sel) {
    for (const p of pods) {
      const vm = p.metadata.labels?.[VM_LABEL];
      if (p.metadata.namespace === ns && vm && !p.metadata.deletionTimestamp && matchesSelector(p.metadata.labels, sel)) vms.add(vm);
    }
  }
  return [...vms].sort();
}

/** The VMSnapshots this schedule owns (by uid: a schedule of the same name made since owns none of them). */
export function ownedSnapshots(sched: VMSnapshotSchedule, snapshots: readonly VMSnapshot[]): VMSnapshot[] {
  const uid = sched.metadata.uid;
  return snapshots.filter(
    (s) => s.metadata.namespace === sched.metadata.namespace && (s.metadata as { ownerReferences?: Array<{ uid?: string }> }).ownerReferences?.some((o) => o.uid === uid),
  );
}

const scheduledAt = (s: VMSnapshot) => timeOf(s.metadata.annotations?.[SCHEDULED_TIME_ANNOTATION]) || timeOf(s.metadata.creationTimestamp);
const newestFirst = (a: VMSnapshot, b: VMSnapshot) => scheduledAt(b) - scheduledAt(a) || (b.metadata.name ?? '').localeCompare(a.metadata.name ?? '');

export interface RetentionResult {
  delete: Array<{ snapshot: VMSnapshot; why: string }>;
  /** When the next finished snapshot passes maxAge (ms since epoch), if any. */
  nextExpiry?: number;
}

/**
 * Which finished snapshots retention deletes, per VM: Succeeded beyond keepLast, Failed beyond
 * keepFailed, and any finished one scheduled longer ago than maxAge. Unfinished ones are the
 * concurrency policy's business, never retention's.
 */
export function retentionDeletes(sched: VMSnapshotSchedule, owned: readonly VMSnapshot[], now: number): RetentionResult {
  const r = sched.spec.retention;
  const maxAgeMs = r?.maxAge ? parseDurationMs(r.maxAge) : undefined;
  const keepFailed = r?.keepFailed ?? DEFAULT_KEEP_FAILED;
  const out: RetentionResult = { delete: [] };
  const byVm = new Map<string, VMSnapshot[]>();
  for (const s of owned) {
    if (s.metadata.deletionTimestamp || !isTerminal(s.status?.phase)) continue;
    byVm.set(s.spec.vmName, [...(byVm.get(s.spec.vmName) ?? []), s]);
  }
  for (const list of byVm.values()) {
    list.sort(newestFirst);
    let succeeded = 0;
    let failed = 0;
    for (const s of list) {
      const ok = s.status?.phase === Phase.Succeeded;
      const rank = ok ? ++succeeded : ++failed;
      const age = now - scheduledAt(s);
      if (ok && r?.keepLast !== undefined && rank > r.keepLast) out.delete.push({ snapshot: s, why: `retention.keepLast is ${r.keepLast}` });
      else if (!ok && rank > keepFailed) out.delete.push({ snapshot: s, why: `retention.keepFailed is ${keepFailed}` });
      else if (maxAgeMs !== undefined && age >= maxAgeMs) out.delete.push({ snapshot: s, why: `older than retention.maxAge ${r!.maxAge}` });
      else if (maxAgeMs !== undefined) out.nextExpiry = Math.min(out.nextExpiry ?? Infinity, scheduledAt(s) + maxAgeMs);
    }
  }
  return out;
}

/** The VMSnapshot of `vm` for the run at `time`, owned by and labelled with the schedule. */
export function snapshotFor(sched: VMSnapshotSchedule, vm: string, time: Date): VMSnapshotInput {
  const t = sched.spec.template;
  return {
    apiVersion: API_VERSION,
    kind: VMSNAPSHOT_KIND,
    metadata: {
      name: scheduledSnapshotName(sched.metadata.name!, vm, time),
      namespace: sched.metadata.namespace,
      labels: { ...t?.metadata?.labels, [SCHEDULE_LABEL]: sched.metadata.name!, [VM_LABEL]: vm },
      annotations: { ...t?.metadata?.annotations, [SCHEDULED_TIME_ANNOTATION]: time.toISOString() },
      ownerReferences: [
        { apiVersion: API_VERSION, kind: VMSNAPSHOTSCHEDULE_KIND, name: sched.metadata.name!, uid: sched.metadata.uid!, controller: true, blockOwnerDeletion: true },
      ],
    },
    spec: { ...t?.spec, vmName: vm },
  } as VMSnapshotInput;
}

/** The run due now, if any: the latest cron time in (last, now]. */
function dueRun(sched: VMSnapshotSchedule, cron: ReturnType<typeof compileSchedule>, now: Date): Date | undefined {
  const last = new Date(timeOf(sched.status?.lastScheduleTime) || timeOf(sched.metadata.creationTimestamp));
  const first = cron.nextRun(last);
  if (!first || first.getTime() > now.getTime()) return undefined;
  return cron.previousRuns(1, new Date(now.getTime() + 1))[0] ?? first;
}

export function reconcileSchedule(sched: VMSnapshotSchedule, world: ScheduleWorld, now: Date): ScheduleDecision {
  const d: ScheduleDecision = { create: [], delete: [], events: [] };
  if (sched.metadata.deletionTimestamp) return d; // the garbage collector takes its VMSnapshots
  const gen = sched.metadata.generation;
  const owned = ownedSnapshots(sched, world.snapshots);
  const next: VMSnapshotScheduleStatus = { ...sched.status, observedGeneration: gen };

  // Retention first: it applies while suspended too, and whatever the schedule's state.
  const kept = retentionDeletes(sched, owned, now.getTime());
  for (const { snapshot, why } of kept.delete) d.delete.push({ name: snapshot.metadata.name!, uid: snapshot.metadata.uid!, why });
  if (kept.delete.length) {
    const names = kept.delete.map((k) => k.snapshot.metadata.name).join(', ');
    d.events.push({ type: 'Normal', reason: 'RetentionDeleted', message: `deleting ${names} (${kept.delete[0]!.why}${kept.delete.length > 1 ? ', ...' : ''})` });
  }
  const deleted = new Set(d.delete.map((x) => x.uid));
  const remaining = owned.filter((s) => !deleted.has(s.metadata.uid!));
  const active = remaining.filter((s) => !isTerminal(s.status?.phase) && !s.metadata.deletionTimestamp);
  const lastOk = remaining.filter((s) => s.status?.phase === Phase.Succeeded).sort((a, b) => timeOf(b.status?.completionTime) - timeOf(a.status?.completionTime))[0];
  if (lastOk && timeOf(lastOk.status?.completionTime) > timeOf(next.lastSuccessfulTime)) {
    next.lastSuccessfulTime = lastOk.status!.completionTime;
    next.lastSuccessfulSnapshot = lastOk.metadata.name;
  }

  let cron: ReturnType<typeof compileSchedule>;
  try {
    cron = compileSchedule(sched.spec.schedule, sched.spec.timeZone);
  } catch (err) {
    const message = (err as Error).message;
    delete next.nextScheduleTime;
    next.conditions = setCondition(next.conditions, { type: 'Ready', status: 'False', reason: 'InvalidSchedule', message, observedGeneration: gen }, now);
    const was = sched.status?.conditions?.find((c) => c.type === 'Ready');
    if (was?.reason !== 'InvalidSchedule' || was.message !== message) d.events.push({ type: 'Warning', reason: 'InvalidSchedule', message });
    return finish(sched, next, active, remaining, d, kept.nextExpiry, now);
  }

  if (sched.spec.suspend) {
    delete next.nextScheduleTime;
    next.conditions = setCondition(next.conditions, { type: 'Ready', status: 'True', reason: 'Suspended', message: 'spec.suspend is true: no new VMSnapshots', observedGeneration: gen }, now);
    return finish(sched, next, active, remaining, d, kept.nextExpiry, now);
  }

  const due = dueRun(sched, cron, now);
  if (due) {
    const lateMs = now.getTime() - due.getTime();
    const deadline = sched.spec.startingDeadlineSeconds;
    if (deadline !== undefined && lateMs > deadline * 1000) {
      if (timeOf(next.lastMissedTime) !== due.getTime()) {
        next.lastMissedTime = due.toISOString();
        d.events.push({
          type: 'Warning',
          reason: 'MissedSchedule',
          message: `skipped the run of ${due.toISOString()}: found ${Math.round(lateMs / 1000)}s late, more than startingDeadlineSeconds (${deadline})`,
        });
      }
    } else {
      runAt(sched, due, world, remaining, active, d);
      next.lastScheduleTime = due.toISOString();
      next.vmCount = selectedVMs(sched, world.pods).length;
    }
  }
  const nextRun = cron.nextRun(now);
  if (nextRun) next.nextScheduleTime = nextRun.toISOString();
  else delete next.nextScheduleTime;
  next.conditions = setCondition(
    next.conditions,
    { type: 'Ready', status: 'True', reason: 'Scheduled', message: nextRun ? 'the schedule is valid and running' : 'the schedule has no further runs', observedGeneration: gen },
    now,
  );
  return finish(sched, next, active, remaining, d, Math.min(kept.nextExpiry ?? Infinity, nextRun?.getTime() ?? Infinity), now);
}

/** Creates the run's VMSnapshots, one per selected VM, as concurrencyPolicy allows. */
function runAt(sched: VMSnapshotSchedule, due: Date, world: ScheduleWorld, owned: readonly VMSnapshot[], active: VMSnapshot[], d: ScheduleDecision): void {
  const vms = selectedVMs(sched, world.pods);
  if (vms.length === 0) {
    d.events.push({ type: 'Warning', reason: 'NoVMs', message: `the run of ${due.toISOString()} selected no VM: vmNames is empty and vmSelector matches no VM pod of this namespace` });
    return;
  }
  const created: string[] = [];
  for (const vm of vms) {
    const name = scheduledSnapshotName(sched.metadata.name!, vm, due);
    if (owned.some((s) => s.metadata.name === name)) continue; // this run was taken already
    const running = active.filter((s) => s.spec.vmName === vm);
    if (running.length && sched.spec.concurrencyPolicy === 'Forbid') {
      d.events.push({ type: 'Normal', reason: 'SkippedRun', message: `VM "${vm}": skipped the run of ${due.toISOString()}, ${running.map((s) => s.metadata.name).join(', ')} has not finished (concurrencyPolicy Forbid)` });
      continue;
    }
    if (running.length && sched.spec.concurrencyPolicy === 'Replace') {
      for (const s of running) d.delete.push({ name: s.metadata.name!, uid: s.metadata.uid!, why: 'replaced by a newer run (concurrencyPolicy Replace)' });
      d.events.push({ type: 'Normal', reason: 'Replaced', message: `VM "${vm}": deleting unfinished ${running.map((s) => s.metadata.name).join(', ')} for the run of ${due.toISOString()} (concurrencyPolicy Replace)` });
    }
    d.create.push(snapshotFor(sched, vm, due));
    created.push(name);
  }
  if (created.length) d.events.push({ type: 'Normal', reason: 'SnapshotsCreated', message: `run of ${due.toISOString()}: created ${created.join(', ')}` });
}

function finish(
  sched: VMSnapshotSchedule,
  next: VMSnapshotScheduleStatus,
  active: readonly VMSnapshot[],
  remaining: readonly VMSnapshot[],
  d: ScheduleDecision,
  wakeAt: number | undefined,
  now: Date,
): ScheduleDecision {
  const replaced = new Set(d.delete.map((x) => x.uid));
  const stillActive = active.filter((s) => !replaced.has(s.metadata.uid!));
  next.active = [...stillActive.map((s) => ({ name: s.metadata.name!, vmName: s.spec.vmName })), ...d.create.map((s) => ({ name: s.metadata.name!, vmName: s.spec.vmName }))];
  next.activeCount = next.active.length;
  next.snapshotCount = remaining.filter((s) => !replaced.has(s.metadata.uid!)).length + d.create.length;
  const patch = statusPatch(sched.status ?? {}, next);
  if (patch) d.status = patch;
  if (wakeAt !== undefined && Number.isFinite(wakeAt)) d.requeueAfterMs = Math.min(MAX_REQUEUE_MS, Math.max(0, wakeAt - now.getTime()) + 50);
  else d.requeueAfterMs = MAX_REQUEUE_MS;
  return d;
}

/** The merge patch from `prev` to `next`: changed keys, and null for removed ones; undefined when equal. */
function statusPatch(prev: Record<string, unknown>, next: Record<string, unknown>): Record<string, unknown> | undefined {
  const patch: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(next)) if (v !== undefined && JSON.stringify(prev[k]) !== JSON.stringify(v)) patch[k] = v;
  for (const k of Object.keys(prev)) if (!(k in next) || next[k] === undefined) patch[k] = null;
  return Object.keys(patch).length ? patch : undefined;
}
