import {
  SCHEDULED_TIME_ANNOTATION,
  SCHEDULE_LABEL,
  VMSnapshotScheduleSpecSchema,
  VM_LABEL,
  formatZodError,
  type VMSnapshot,
  type VMSnapshotSchedule,
  type VMSnapshotScheduleSpecInput,
} from '../api/index.js';
import { matchesSelector, reconcileSchedule, retentionDeletes, scheduledSnapshotName, selectedVMs, type ScheduleWorld } from './reconcile-schedule.js';
import type { PodView } from './vm-pod-record.js';

const T0 = Date.parse('2026-03-01T12:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000);

function schedule(spec: Partial<VMSnapshotScheduleSpecInput> = {}, status: VMSnapshotSchedule['status'] = undefined, created = at(0)): VMSnapshotSchedule {
  return {
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMSnapshotSchedule',
    metadata: { name: 'nightly', namespace: 'ns', uid: 'sched-uid', generation: 1, resourceVersion: '1', creationTimestamp: created.toISOString() },
    spec: VMSnapshotScheduleSpecSchema.parse({ schedule: '*/10 * * * * *', vmNames: ['web'], ...spec }),
    status,
  };
}

let uid = 0;
function snap(vm: string, scheduled: Date, phase?: string, opts: { owner?: string; completed?: Date; deleting?: boolean } = {}): VMSnapshot {
  return {
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMSnapshot',
    metadata: {
      name: scheduledSnapshotName('nightly', vm, scheduled),
      namespace: 'ns',
      uid: `s${++uid}`,
      annotations: { [SCHEDULED_TIME_ANNOTATION]: scheduled.toISOString() },
      ...(opts.deleting ? { deletionTimestamp: scheduled.toISOString() } : {}),
      ownerReferences: [{ uid: opts.owner ?? 'sched-uid', kind: 'VMSnapshotSchedule', name: 'nightly', controller: true }],
    } as VMSnapshot['metadata'],
    spec: { vmName: vm, captureMode: 'Paused', afterSnapshot: 'Resume', failureDeadline: '10m' },
    status: phase ? { phase: phase as 'Succeeded', completionTime: (opts.completed ?? scheduled).toISOString() } : undefined,
  };
}

const world = (snapshots: VMSnapshot[] = [], pods: PodView[] = []): ScheduleWorld => ({ snapshots, pods });
const pod = (name: string, vm: string, labels: Record<string, string> = {}, namespace = 'ns'): PodView =>
  ({ metadata: { name, namespace, uid: `p-${name}`, labels: { [VM_LABEL]: vm, ...labels } }, spec: {}, status: { phase: 'Running' } }) as unknown as PodView;

describe('cron edges', () => {
  it('runs nothing before the first cron time after creation, and wakes up just after it', () => {
    const d = reconcileSchedule(schedule({}, undefined, at(3)), world(), at(9));
    expect(d.create).toEqual([]);
    expect(d.status?.nextScheduleTime).toBe(at(10).toISOString());
    expect(d.requeueAfterMs).toBeGreaterThanOrEqual(1000);
    expect(d.requeueAfterMs).toBeLessThan(1200);
  });

  it('takes a run exactly at its time, named by schedule, VM and time, owned and labelled', () => {
    const d = reconcileSchedule(schedule({ template: { metadata: { labels: { team: 'a' } }, spec: { afterSnapshot: 'Stop', parallelism: { channels: 2 } } } }), world(), at(10));
    expect(d.create).toHaveLength(1);
    const s = d.create[0]!;
    expect(s.metadata.name).toBe(`nightly-web-${Math.floor(T0 / 1000) + 10}`);
    expect(s.metadata.labels).toEqual({ team: 'a', [SCHEDULE_LABEL]: 'nightly', [VM_LABEL]: 'web' });
    expect(s.metadata.annotations).toEqual({ [SCHEDULED_TIME_ANNOTATION]: at(10).toISOString() });
    expect((s.metadata as { ownerReferences: unknown[] }).ownerReferences).toEqual([
      { apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMSnapshotSchedule', name: 'nightly', uid: 'sched-uid', controller: true, blockOwnerDeletion: true },
    ]);
    expect(s.spec).toMatchObject({ vmName: 'web', afterSnapshot: 'Stop', parallelism: { channels: 2 } });
    expect(d.status).toMatchObject({ lastScheduleTime: at(10).toISOString(), nextScheduleTime: at(20).toISOString(), vmCount: 1, activeCount: 1 });
  });

  it('never takes the same run twice: a run whose snapshot exists creates nothing', () => {
    const existing = snap('web', at(10));
    const d = reconcileSchedule(schedule(), world([existing]), at(11));
    expect(d.create).toEqual([]);
  });

  it('after lastScheduleTime, only a later cron time is due', () => {
    const s = schedule({}, { lastScheduleTime: at(10).toISOString() });
    expect(reconcileSchedule(s, world(), at(19)).create).toEqual([]);
    expect(reconcileSchedule(s, world(), at(20)).create.map((c) => c.metadata.name)).toEqual([scheduledSnapshotName('nightly', 'web', at(20))]);
  });

  it('honours the time zone: 03:00 in Europe/Berlin is 02:00 UTC in winter', () => {
    const s = schedule({ schedule: '0 3 * * *', timeZone: 'Europe/Berlin' }, undefined, new Date('2026-01-10T00:00:00Z'));
    const d = reconcileSchedule(s, world(), new Date('2026-01-10T01:00:00Z'));
    expect(d.status?.nextScheduleTime).toBe('2026-01-10T02:00:00.000Z');
  });

  it('an invalid schedule or time zone sets Ready False InvalidSchedule with the reason, and runs nothing', () => {
    const s = schedule();
    s.spec.schedule = '61 * * * *';
    const d = reconcileSchedule(s, world(), at(100));
    expect(d.create).toEqual([]);
    expect(d.status?.conditions).toMatchObject([{ type: 'Ready', status: 'False', reason: 'InvalidSchedule' }]);
    expect(d.events).toMatchObject([{ type: 'Warning', reason: 'InvalidSchedule' }]);
    const z = schedule();
    z.spec.timeZone = 'Mars/Olympus';
    expect(reconcileSchedule(z, world(), at(100)).status?.conditions).toMatchObject([{ reason: 'InvalidSchedule', message: expect.stringMatching(/timeZone "Mars\/Olympus"/) }]);
  });

  it('the schema refuses bad cron expressions and time zones, naming the field', () => {
    const bad = (spec: object) => {
      const r = VMSnapshotScheduleSpecSchema.safeParse({ vmNames: ['web'], ...spec });
      return r.success ? 'accepted' : formatZodError(r.error);
    };
    expect(bad({ schedule: '* * *' })).toMatch(/^schedule: .*5 fields/);
    expect(bad({ schedule: '99 * * * *' })).toMatch(/^schedule: .*not a cron expression/);
    expect(bad({ schedule: '0 3 * * *', timeZone: 'Nowhere/Land' })).toMatch(/^timeZone: .*IANA/);
    expect(bad({ schedule: '@daily', retention: { keepLast: 0 } })).toMatch(/^retention\.keepLast: .*at least 1/);
    expect(bad({ schedule: '@daily', concurrencyPolicy: 'Sometimes' })).toMatch(/^concurrencyPolicy: /);
    expect(bad({ schedule: '@daily' })).toBe('accepted'); // "vmNames or vmSelector" is the API server's CEL rule
  });
});

describe('missed runs', () => {
  it('takes only the most recent missed run, once', () => {
    const s = schedule({}, { lastScheduleTime: at(10).toISOString() });
    const d = reconcileSchedule(s, world(), at(65));
    expect(d.create.map((c) => c.metadata.name)).toEqual([scheduledSnapshotName('nightly', 'web', at(60))]);
    expect(d.status?.lastScheduleTime).toBe(at(60).toISOString());
  });

  it('skips a run found later than startingDeadlineSeconds, with one MissedSchedule event', () => {
    const s = schedule({ startingDeadlineSeconds: 3 }, { lastScheduleTime: at(10).toISOString() });
    const d = reconcileSchedule(s, world(), at(65));
    expect(d.create).toEqual([]);
    expect(d.events).toMatchObject([{ type: 'Warning', reason: 'MissedSchedule' }]);
    expect(d.status?.lastMissedTime).toBe(at(60).toISOString());
    expect(d.status?.lastScheduleTime).toBeUndefined(); // unchanged
    const again = reconcileSchedule({ ...s, status: { ...s.status, ...(d.status as object) } } as VMSnapshotSchedule, world(), at(66));
    expect(again.events).toEqual([]);
    // Within the deadline it runs.
    expect(reconcileSchedule(s, world(), at(62)).create).toHaveLength(1);
  });
});

describe('suspend', () => {
  it('creates nothing and has no next run while suspended, but retention still deletes', () => {
    const old = [snap('web', at(-30), 'Succeeded'), snap('web', at(-20), 'Succeeded'), snap('web', at(-10), 'Succeeded')];
    const d = reconcileSchedule(schedule({ suspend: true, retention: { keepLast: 1 } }, { lastScheduleTime: at(-10).toISOString(), nextScheduleTime: at(0).toISOString() }), world(old), at(100));
    expect(d.create).toEqual([]);
    expect(d.status?.nextScheduleTime).toBeNull();
    expect(d.status?.conditions).toMatchObject([{ type: 'Ready', status: 'True', reason: 'Suspended' }]);
    expect(d.delete.map((x) => x.uid).sort()).toEqual([old[0]!.metadata.uid, old[1]!.metadata.uid].sort());
  });
});

describe('concurrency', () => {
  const running = () => snap('web', at(0), 'InProgress');
  const s = (policy: 'Forbid' | 'Allow' | 'Replace') => schedule({ concurrencyPolicy: policy }, { lastScheduleTime: at(0).toISOString() });

  it('Forbid skips a VM whose previous snapshot has not finished', () => {
    const d = reconcileSchedule(s('Forbid'), world([running()]), at(10));
    expect(d.create).toEqual([]);
    expect(d.delete).toEqual([]);
    expect(d.events).toMatchObject([{ reason: 'SkippedRun' }]);
    expect(d.status?.lastScheduleTime).toBe(at(10).toISOString());
  });

  it('Allow creates the new one beside it', () => {
    const r = running();
    const d = reconcileSchedule(s('Allow'), world([r]), at(10));
    expect(d.create).toHaveLength(1);
    expect(d.delete).toEqual([]);
    expect(d.status?.active).toEqual([{ name: r.metadata.name, vmName: 'web' }, { name: d.create[0]!.metadata.name, vmName: 'web' }]);
  });

  it('Replace deletes the unfinished one and creates the new one', () => {
    const r = running();
    const d = reconcileSchedule(s('Replace'), world([r]), at(10));
    expect(d.create).toHaveLength(1);
    expect(d.delete).toEqual([{ name: r.metadata.name, uid: r.metadata.uid, why: expect.stringMatching(/Replace/) }]);
    expect(d.status?.active).toEqual([{ name: d.create[0]!.metadata.name, vmName: 'web' }]);
  });

  it('a finished previous snapshot never blocks a run', () => {
    expect(reconcileSchedule(s('Forbid'), world([snap('web', at(0), 'Failed')]), at(10)).create).toHaveLength(1);
  });
});

describe('retention', () => {
  it('keeps the last N Succeeded per VM, newest by scheduled time', () => {
    const web = [snap('web', at(0), 'Succeeded'), snap('web', at(10), 'Succeeded'), snap('web', at(20), 'Succeeded')];
    const db = [snap('db', at(0), 'Succeeded'), snap('db', at(10), 'Succeeded')];
    const r = retentionDeletes(schedule({ retention: { keepLast: 2 } }), [...web, ...db], at(30).getTime());
    expect(r.delete.map((x) => x.snapshot.metadata.uid)).toEqual([web[0]!.metadata.uid]);
    expect(r.delete[0]!.why).toMatch(/keepLast is 2/);
  });

  it('keeps keepFailed Failed ones (default 1) and never counts them as kept successes', () => {
    const list = [snap('web', at(0), 'Failed'), snap('web', at(10), 'Failed'), snap('web', at(20), 'Succeeded')];
    const r = retentionDeletes(schedule({ retention: { keepLast: 1 } }), list, at(30).getTime());
    expect(r.delete.map((x) => x.snapshot.metadata.uid)).toEqual([list[0]!.metadata.uid]);
  });

  it('deletes finished ones older than maxAge, and says when the next one expires', () => {
    const list = [snap('web', at(0), 'Succeeded'), snap('web', at(50), 'Succeeded')];
    const r = retentionDeletes(schedule({ retention: { maxAge: '60s' } }), list, at(70).getTime());
    expect(r.delete.map((x) => x.snapshot.metadata.uid)).toEqual([list[0]!.metadata.uid]);
    expect(r.nextExpiry).toBe(at(110).getTime());
    // The schedule wakes up for that expiry when it is sooner than the next run.
    const d = reconcileSchedule(schedule({ schedule: '0 0 1 1 *', retention: { maxAge: '60s' } }), world(list), at(70));
    expect(d.requeueAfterMs).toBeGreaterThanOrEqual(40_000);
    expect(d.requeueAfterMs).toBeLessThan(41_000);
  });

  it('never deletes unfinished ones, ones being deleted, or snapshots of another schedule', () => {
    const list = [snap('web', at(0), 'InProgress'), snap('web', at(5), 'Succeeded', { deleting: true }), snap('web', at(6), 'Succeeded', { owner: 'other' }), snap('web', at(10), 'Succeeded')];
    const d = reconcileSchedule(schedule({ retention: { keepLast: 1, maxAge: '1s' } }, { lastScheduleTime: at(1000).toISOString() }), world(list), at(1005));
    expect(d.delete.map((x) => x.uid)).toEqual([list[3]!.metadata.uid]);
  });
});

describe('selection and status', () => {
  it('selects VM pods of its own namespace by label selector, plus vmNames', () => {
    const pods = [pod('a', 'web', { tier: 'front' }), pod('b', 'db', { tier: 'back' }), pod('c', 'other', { tier: 'front' }, 'elsewhere')];
    const s = schedule({ vmNames: ['extra'], vmSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['front'] }] } });
    expect(selectedVMs(s, pods)).toEqual(['extra', 'web']);
    expect(matchesSelector({ a: '1' }, {})).toBe(true);
    expect(matchesSelector({ a: '1' }, { matchExpressions: [{ key: 'a', operator: 'DoesNotExist' }] })).toBe(false);
    expect(matchesSelector({ a: '1' }, { matchLabels: { a: '1' }, matchExpressions: [{ key: 'b', operator: 'NotIn', values: ['x'] }] })).toBe(true);
  });

  it('a run that selects no VM says so', () => {
    const s = schedule({ vmNames: undefined, vmSelector: { matchLabels: { tier: 'none' } } });
    const d = reconcileSchedule(s, world([], [pod('a', 'web')]), at(10));
    expect(d.create).toEqual([]);
    expect(d.events).toMatchObject([{ type: 'Warning', reason: 'NoVMs' }]);
  });

  it('records the last success, and patches nothing when nothing changed', () => {
    const ok = snap('web', at(10), 'Succeeded', { completed: at(12) });
    const first = reconcileSchedule(schedule({}, { lastScheduleTime: at(10).toISOString() }), world([ok]), at(15));
    expect(first.status).toMatchObject({ lastSuccessfulTime: at(12).toISOString(), lastSuccessfulSnapshot: ok.metadata.name, activeCount: 0, snapshotCount: 1 });
    const settled = schedule({}, { lastScheduleTime: at(10).toISOString(), ...(first.status as object) });
    expect(reconcileSchedule(settled, world([ok]), at(16)).status).toBeUndefined();
  });

  it('names stay within 253 characters and differ by VM and time', () => {
    const long = 'x'.repeat(63);
    const vm = 'v'.repeat(63);
    const a = scheduledSnapshotName(long, vm, at(0));
    expect(a.length).toBeLessThanOrEqual(253);
    expect(new Set([a, scheduledSnapshotName(long, vm, at(1)), scheduledSnapshotName(long, 'w', at(0))]).size).toBe(3);
  });
});
