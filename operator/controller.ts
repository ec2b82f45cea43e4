// Wires informers to the pure reconcilers: a keyed work queue (one reconcile
// per object at a time, duplicates folded), timed requeues, and the patches,
// events and metrics that a decision asks for.
import type { Logger } from 'pino';
import type { VMInventory, VMRestore, VMSnapshot, VMSnapshotClass, VMSnapshotSchedule } from '../api/index.js';
import { isTerminal, OPERATOR_COMPONENT } from '../api/protocol.js';
import { apiMessage, statusCode, startInformer, startPodInformer, type Kube, type KubeObject, type ResilientInformer, type ResourceName } from '../kube/client.js';
import { EventRecorder } from '../kube/events.js';
import { fail, type Decision } from './decision.js';
import type { OperatorMetrics } from './metrics.js';
import { reconcileRestore } from './reconcile-restore.js';
import { reconcileSchedule } from './reconcile-schedule.js';
import { reconcileSnapshot } from './reconcile-snapshot.js';
import { applySchedule } from './schedule-executor.js';
import type { PodView } from './vm-pod-record.js';
import { DEFAULT_RELEASE_NAMESPACE, SNAPSHOT_FINALIZER, VM_LABEL } from '../api/index.js';
import { repositoryTarget } from '../agent/src/objstore/access.js';
import { removeUploadedSnapshot } from '../agent/src/objstore/remove.js';
import { DEFAULT_NODE_LOSS_GRACE_SECONDS } from './node-loss.js';
import { objectKey, type World } from './world.js';
import type * as k8s from '@kubernetes/client-node';

type Kind = 'VMSnapshot' | 'VMRestore' | 'VMSnapshotSchedule';
const RESOURCE: Record<Kind, ResourceName> = { VMSnapshot: 'vmSnapshot', VMRestore: 'vmRestore', VMSnapshotSchedule: 'vmSnapshotSchedule' };

/** The schedule that owns a VMSnapshot, as a queue key: its runs and retention follow its snapshots. */
function ownerScheduleKey(o: KubeObject): string | undefined {
  const refs = (o.metadata as { ownerReferences?: Array<{ kind?: string; name?: string; controller?: boolean }> }).ownerReferences;
  const owner = refs?.find((r) => r.kind === 'VMSnapshotSchedule' && r.controller);
  return owner ? objectKey('VMSnapshotSchedule', o.metadata.namespace, owner.name) : undefined;
}
const REMOTE_DELETE_RETRY_MS = 30_000;

export class Controller {
  private readonly informers: Partial<Record<ResourceName, ResilientInformer<KubeObject>>> = {};
  private pods: ResilientInformer<KubeObject> | undefined;
  private readonly queue = new Set<string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly recentlyAssigned = new Map<string, string>();
  private draining = false;
  private stopped = false;
  /** True once the first lists of every informer arrived (readiness). */
  synced = false;
  private readonly events: EventRecorder;

  constructor(
    private readonly kube: Kube,
    private readonly log: Logger,
    private readonly metrics: OperatorMetrics,
    private readonly opts: { namespace: string; nodeLossGraceMs: number } = { namespace: DEFAULT_RELEASE_NAMESPACE, nodeLossGraceMs: DEFAULT_NODE_LOSS_GRACE_SECONDS * 1000 },
  ) {
    this.events = new EventRecorder(kube, OPERATOR_COMPONENT, (msg, err) => log.warn({ err }, msg));
  }

  async start(): Promise<void> {
    const watchOwned = (kind: Kind) =>
      startInformer<KubeObject>(
        this.kube,
        RESOURCE[kind],
        {
          onChange: (o) => {
            this.enqueue(objectKey(kind, o.metadata.namespace, o.metadata.name));
            const owner = kind === 'VMSnapshot' ? ownerScheduleKey(o) : undefined;
            if (owner) this.enqueue(owner);
          },
          onDelete: (o) => {
            const owner = kind === 'VMSnapshot' ? ownerScheduleKey(o) : undefined;
            if (owner) this.enqueue(owner);
          },
          onError: (err) => this.log.warn({ err: String(err) }, `${kind} watch failed; restarting`),
        },
        { resyncMs: 15_000 },
      );
    // Classes and inventories change what Pending objects can do: look at those again.
    const watchContext = (resource: ResourceName) =>
      startInformer<KubeObject>(this.kube, resource, {
        onChange: () => this.enqueuePending(),
        onDelete: () => this.enqueuePending(),
        onError: (err) => this.log.warn({ err: String(err) }, `${resource} watch failed; restarting`),
      });
    this.informers.vmSnapshotClass = watchContext('vmSnapshotClass');
    this.informers.vmInventory = watchContext('vmInventory');
    this.informers.vmSnapshot = watchOwned('VMSnapshot');
    this.informers.vmRestore = watchOwned('VMRestore');
    this.informers.vmSnapshotSchedule = watchOwned('VMSnapshotSchedule');
    // VM pods: what a save records, and the pods of copies and wakes coming up.
    this.pods = startPodInformer(
      this.kube,
      {
        onChange: () => this.enqueuePending(),
        onDelete: () => this.enqueuePending(),
        onError: (err) => this.log.warn({ err: String(err) }, 'pod watch failed; restarting'),
      },
      { labelSelector: VM_LABEL },
    );
    await Promise.all([...Object.values(this.informers), this.pods].map((i) => i!.synced));
    this.synced = true;
    this.log.info('caches synced');
    this.enqueuePending();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    await Promise.all([...Object.values(this.informers), this.pods].map((i) => i?.stop()));
  }

  private list<T>(resource: ResourceName): T[] {
    return (this.informers[resource]?.informer.list() ?? []) as unknown as T[];
  }

  private world(): World {
    return {
      snapshots: this.list<VMSnapshot>('vmSnapshot'),
      restores: this.list<VMRestore>('vmRestore'),
      classes: this.list<VMSnapshotClass>('vmSnapshotClass'),
      inventories: this.list<VMInventory>('vmInventory'),
      pods: (this.pods?.informer.list() ?? []) as unknown as PodView[],
      recentlyAssigned: this.recentlyAssigned,
    };
  }

  private enqueuePending(): void {
    for (const kind of ['VMSnapshot', 'VMRestore'] as const) {
      for (const o of this.list<KubeObject & { status?: { phase?: string; hibernated?: boolean } }>(RESOURCE[kind])) {
        // A hibernation snapshot waits for its VM to run again (status.hibernated).
        if (!isTerminal(o.status?.phase) || o.metadata.deletionTimestamp || o.status?.hibernated) this.enqueue(objectKey(kind, o.metadata.namespace, o.metadata.name));
      }
    }
  }

  enqueue(key: string): void {
    this.queue.add(key);
    if (!this.draining) void this.drain();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.size > 0 && !this.stopped) {
        const key = this.queue.values().next().value as string;
        this.queue.delete(key);
        await this.reconcile(key).catch((err) => {
          this.log.error({ err: String(err), key }, 'reconcile failed; retrying');
          this.metrics.reconciles.inc({ kind: key.split('/')[0], result: 'error' });
          this.requeue(key, 1_000);
        });
      }
    } finally {
      this.draining = false;
    }
  }

  private requeue(key: string, afterMs: number): void {
    clearTimeout(this.timers.get(key));
    this.timers.set(
      key,
      setTimeout(() => {
        this.timers.delete(key);
        this.enqueue(key);
      }, Math.max(0, Math.min(afterMs, 2 ** 31 - 1))),
    );
  }

  private async reconcile(key: string): Promise<void> {
    const [kind, namespace, name] = key.split('/') as [Kind, string, string];
    const resource = RESOURCE[kind];
    const obj = this.informers[resource]?.informer.get(name, namespace) as (VMSnapshot & VMRestore) | undefined;
    if (!obj) return;
    if (kind === 'VMSnapshotSchedule') return this.reconcileSchedule(key, obj as unknown as VMSnapshotSchedule);
    this.forgetFinished(kind, obj);
    const world = this.world();
    const now = new Date();
    const decision: Decision = kind === 'VMSnapshot' ? reconcileSnapshot(obj as VMSnapshot, world, now, this.opts) : reconcileRestore(obj as VMRestore, world, now);
    await this.apply(kind, obj, decision);
    this.metrics.reconciles.inc({ kind, result: 'ok' });
    if (decision.requeueAfterMs !== undefined) this.requeue(key, decision.requeueAfterMs);
  }

  private async reconcileSchedule(key: string, sched: VMSnapshotSchedule): Promise<void> {
    const world = this.world();
    const d = reconcileSchedule(sched, { snapshots: world.snapshots, pods: world.pods }, new Date());
    const outcome = await applySchedule(this.kube, sched, d);
    if (outcome === 'gone') return;
    if (outcome === 'conflict') return this.requeue(key, 200); // the schedule moved on; look again
    const full = { ...sched, apiVersion: sched.apiVersion ?? 'vmsnap.io/v1alpha1', kind: 'VMSnapshotSchedule' } as unknown as KubeObject;
    for (const e of d.events) {
      this.log.info({ object: key, reason: e.reason }, e.message);
      await this.events.record(full, e.type, e.reason, e.message);
    }
    this.metrics.reconciles.inc({ kind: 'VMSnapshotSchedule', result: 'ok' });
    if (d.requeueAfterMs !== undefined) this.requeue(key, d.requeueAfterMs);
  }

  /** Finished operations no longer hold their VM; count them once in the metrics. */
  private forgetFinished(kind: Kind, obj: VMSnapshot | VMRestore): void {
    if (!isTerminal(obj.status?.phase)) return;
    this.metrics.observeFinished(kind, obj.metadata.uid, obj.status as never);
    const self = objectKey(kind, obj.metadata.namespace, obj.metadata.name);
    for (const [vm, holder] of this.recentlyAssigned) if (holder === self) this.recentlyAssigned.delete(vm);
  }

  /**
   * Carries out a decision's pod step. Returns why the API server refused the pod to create (its
   * name taken, Pod Security or another admission): the restore fails with that, never retries it.
   */
  private async applyPod(d: Decision, obj: VMSnapshot | VMRestore): Promise<string | undefined> {
    const p = d.pod!;
    if ('create' in p) {
      const { namespace, name } = p.create.metadata;
      try {
        await this.kube.createPod(p.create as k8s.V1Pod);
      } catch (err) {
        const code = statusCode(err);
        if (code === 409) {
          // Ours from an earlier attempt (the informer lags): the next reconcile sees it. Anyone else's: taken.
          const existing = await this.kube.core.readNamespacedPod({ namespace: namespace!, name: name! }).catch(() => undefined);
          if (existing?.metadata?.ownerReferences?.some((o) => o.uid === obj.metadata.uid)) return undefined;
          return `spec.targetVMName "${name}" is taken: a pod of that name exists in namespace ${namespace}; choose a name no pod of this namespace has`;
        }
        if (code === 400 || code === 403 || code === 422) return `the API server refused pod ${name} in namespace ${namespace}, made from the recorded pod: ${apiMessage(err)}`;
        throw err;
      }
    } else if ('delete' in p) await this.kube.deletePod(p.delete);
    else {
      await this.kube.patchPod(p.release, { metadata: { resourceVersion: p.release.resourceVersion, ownerReferences: p.release.ownerReferences } });
    }
    return undefined;
  }

  /** Removes a snapshot's repository copy; false (with a Warning event) when it could not. */
  private async removeRemoteCopy(obj: VMSnapshot | VMRestore, r: NonNullable<Decision['remoteDelete']>): Promise<boolean> {
    try {
      await removeUploadedSnapshot(await repositoryTarget(this.kube, this.opts.namespace, r.repository, r.prefix));
      return true;
    } catch (err) {
      const message = `cannot remove the copy in bucket ${r.repository.bucket} at ${r.prefix} (retrying every ${REMOTE_DELETE_RETRY_MS / 1000} s; to give up, remove the finalizer ${SNAPSHOT_FINALIZER}): ${(err as Error).message}`;
      this.log.warn({ object: `${obj.metadata.namespace}/${obj.metadata.name}` }, message);
      await this.events.record({ ...obj, apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMSnapshot' } as unknown as KubeObject, 'Warning', 'RemoteDeleteFailed', message);
      return false;
    }
  }

  private async apply(kind: Kind, obj: VMSnapshot | VMRestore, d: Decision): Promise<void> {
    const resource = RESOURCE[kind];
    const ref = { namespace: obj.metadata.namespace, name: obj.metadata.name! };
    const key = objectKey(kind, ref.namespace, ref.name);
    try {
      const refused = d.pod ? await this.applyPod(d, obj) : undefined;
      if (refused) d = fail(obj, 'InvalidSpec', refused, new Date());
      if (d.remoteDelete && !(await this.removeRemoteCopy(obj, d.remoteDelete))) {
        this.requeue(key, REMOTE_DELETE_RETRY_MS);
        return;
      }
      if (d.status) {
        await this.kube.patchStatus(resource, ref, { metadata: { resourceVersion: obj.metadata.resourceVersion }, status: d.status });
      }
      if (d.metadata) await this.kube.patch(resource, ref, { metadata: d.metadata });
    } catch (err) {
      const code = statusCode(err);
      if (code === 409) {
        this.requeue(key, 200); // the object moved on (an agent claimed it); look again
        return;
      }
      if (code === 404) return;
      throw err;
    }
    if (d.assigned) this.recentlyAssigned.set(d.assigned.vmKey, key);
    const full = { ...obj, apiVersion: obj.apiVersion ?? 'vmsnap.io/v1alpha1', kind } as unknown as KubeObject;
    for (const e of d.events) {
      this.log.info({ object: key, reason: e.reason }, e.message);
      await this.events.record(full, e.type, e.reason, e.message);
    }
  }
}

