// Carries out a VMSnapshotSchedule decision: creates the run's VMSnapshots, deletes what
// retention or Replace let go (the normal deletion path: their finalizers and deletionPolicy
// apply), then patches the schedule's status.
import type { VMSnapshotSchedule } from '../api/index.js';
import { apiMessage, statusCode, type Kube, type KubeObject } from '../kube/client.js';
import type { ScheduleDecision } from './reconcile-schedule.js';

export type ScheduleOutcome = 'ok' | 'conflict' | 'gone';

/**
 * A VMSnapshot the API server refuses (a template label it does not accept, a quota) becomes a
 * Warning event on the schedule, and the run counts as taken: retrying it would only hammer the
 * API server until the template is fixed, and the next run uses the fixed template.
 */
export async function applySchedule(kube: Kube, sched: VMSnapshotSchedule, d: ScheduleDecision): Promise<ScheduleOutcome> {
  const namespace = sched.metadata.namespace!;
  for (const snap of d.create) {
    try {
      await kube.create('vmSnapshot', snap as unknown as KubeObject);
    } catch (err) {
      const code = statusCode(err);
      if (code === 409) continue; // made by an earlier attempt at this run
      if (code !== 400 && code !== 403 && code !== 422) throw err;
      const message = `the API server refused VMSnapshot ${snap.metadata.name}: ${apiMessage(err)}`;
      d.events = [...d.events, { type: 'Warning', reason: 'CreateRefused', message }];
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
