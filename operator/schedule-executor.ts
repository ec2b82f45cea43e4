// Carries out a VMSnapshotSchedule decision: creates the run's VMSnapshots, deletes what
// retention or Replace let go (the normal deletion path: their finalizers and deletionPolicy
// apply), then patches the schedule's status.
import type { VMSnapshotSchedule } from '../api/index.js';
import { statusCode, type Kube, type KubeObject } from '../kube/client.js';
import type { ScheduleDecision } from './reconcile-schedule.js';

export type ScheduleOutcome = 'ok' | 'conflict' | 'gone';

export async function applySchedule(kube: Kube, sched: VMSnapshotSchedule, d: ScheduleDecision): Promise<ScheduleOutcome> {
  const namespace = sched.metadata.namespace!;
  for (const snap of d.create) {
    try {
      await kube.create('vmSnapshot', snap as unknown as KubeObject);
    } catch (err) {
      if (statusCode(err) !== 409) throw err; // 409: made by an earlier attempt at this run
    }
  }
  for (const del of d.delete) await kube.delete('vmSnapshot', { namespace, name: del.name, uid: del.uid });
  if (!d.status) return 'ok';
  try {
    await kube.patchStatus('vmSnapshotSchedule', { namespace, name: sched.metadata.name! }, { metadata: { resourceVersion: sched.metadata.resourceVersion }, status: d.status });
    return 'ok';
  } catch (err) {
    const code = statusCode(err);
    if (code === 409) return 'conflict';
    if (code === 404) return 'gone';
    throw err;
  }
}
