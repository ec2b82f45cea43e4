// Watches the VMSnapshots and VMRestores labelled with this node and turns
// each into at most one job: a run (claim, then save or restore), a recovery
// (left InProgress by a previous agent), or a file deletion. One job per VM at
// a time; a running job is cancelled when its object turns Failed or is deleted.
// New runs wait in a queue for one of the node's slots, shared fairly between
// namespaces (fair-share.ts).
import {
  NODE_LABEL,
  VMRestoreSchema,
  VMSnapshotSchema,
  formatZodError,
  isAssignedTo,
  operationSlots,
  type VMRestore,
  type VMRestoreStatus,
  type VMSnapshot,
  type VMSnapshotStatus,
} from '../../../api/index.js';
import { startInformer, statusCode, type KubeObject, type ResilientInformer, type ResourceName } from '../../../kube/client.js';
import { deletedCancellation, failedCancellation, shutdownCancellation, type Cancellation } from './cancellation.js';
import type { Completion } from './completion.js';
import { patchStatusWithRetry, type AgentContext } from './context.js';
import { deleteSnapshotFile } from './deletion.js';
import { cleanUpFailedRestore, cleanUpFailedSnapshot, hasLeftoverFile, recoverRestore, recoverSnapshot } from './recovery.js';
import { prepareRestore, runRestore } from './restore-runner.js';
import type { PodRestorePrep } from './pod-restore.js';
import { runSnapshot, snapshotClaimExtra } from './snapshot-runner.js';
import { claimPatch } from './status.js';
import { pickWork, type QueuedWork } from './fair-share.js';
import { vmKey } from './vm-locks.js';

type Kind = 'snapshot' | 'restore';
type Work = { kind: 'snapshot'; obj: VMSnapshot } | { kind: 'restore'; obj: VMRestore };
type Mode = 'run' | 'recover' | 'cleanup';

interface Job {
  uid: string;
  work: Work;
  mode: Mode;
  key: string;
  controller: AbortController;
  done: Promise<void>;
}

const RESOURCE: Record<Kind, ResourceName> = { snapshot: 'vmSnapshot', restore: 'vmRestore' };
const KIND_NAME: Record<Kind, string> = { snapshot: 'VMSnapshot', restore: 'VMRestore' };
/** How long work waits for the inventory to finish its short query of the same VM. */
const LOCK_WAIT_MS = 15_000;
/** How long a stopping agent lets running restores finish (their QEMUs keep running either way). */
const RESTORE_GRACE_MS = 20_000;
/** A cancelled save drains at disk speed (see drainMigration); the chart's terminationGracePeriodSeconds must exceed this. */
const SAVE_CANCEL_GRACE_MS = 100_000;

export class WorkDispatcher {
  private readonly jobs = new Map<string, Job>();
  /** VM key -> uid of the job that reserved it. */
  private readonly reserved = new Map<string, string>();
  /** uids claimed or recovered by this process: never run again. */
  private readonly handled = new Set<string>();
  /** uids with a deletion step in flight or done. */
  private readonly deletions = new Map<string, 'busy' | 'done'>();
  /** Final statuses that could not be written yet, retried on the next event or resync. */
  private readonly unwritten = new Map<string, { kind: Kind; ref: { namespace: string; name: string }; completion: Completion }>();
  private readonly invalid = new Set<string>();
  /** Assigned work not claimed yet, waiting for a slot: uid -> work. */
  private readonly queue = new Map<string, Work>();
  /** namespace -> when it last got a slot (serveTick), for round-robin between namespaces. */
  private readonly lastServed = new Map<string, number>();
  private serveTick = 0;
  private schedulePending = false;
  private informers: Array<ResilientInformer<KubeObject>> = [];
  private stopping = false;

  constructor(
    private readonly ctx: AgentContext,
    private readonly onWorkDone: () => void = () => undefined,
    /** Every parsed VMSnapshot of this node (the repository uploads watch them through this). */
    private readonly onSnapshot: (snap: VMSnapshot) => void = () => undefined,
  ) {}

  private get selector(): string {
    return `${NODE_LABEL}=${this.ctx.nodeName}`;
  }

  /** Recovers what a previous agent left InProgress, then starts watching for new work. */
  async start(signal: AbortSignal): Promise<void> {
    await this.recoverLeftovers(signal);
    if (signal.aborted) return;
    for (const kind of ['snapshot', 'restore'] as const) {
      this.informers.push(
        startInformer<KubeObject>(
          this.ctx.kube,
          RESOURCE[kind],
          {
            onChange: (o) => this.consider(kind, o),
            onDelete: (o) => this.onDeleted(o),
            onError: (err) => {
              if (!this.stopping) this.ctx.log.warn({ err: String(err), resource: RESOURCE[kind] }, 'watch failed; restarting it');
            },
          },
          { labelSelector: this.selector },
        ),
      );
    }
    const aborted = new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
    await Promise.race([Promise.all(this.informers.map((i) => i.synced)), aborted]);
  }

  /** Start-up: every object of this node left InProgress gets a recovery job before new work is claimed. */
  private async recoverLeftovers(signal: AbortSignal): Promise<void> {
    for (let delay = 1000; !signal.aborted; delay = Math.min(delay * 2, 30_000)) {
      try {
        const [snapshots, restores] = await Promise.all([
          this.ctx.kube.list<KubeObject>('vmSnapshot', { labelSelector: this.selector }),
          this.ctx.kube.list<KubeObject>('vmRestore', { labelSelector: this.selector }),
        ]);
        // Only leftovers here; new (Pending) work is claimed once the watches run.
        const leftover = (o: KubeObject) => ['InProgress', 'Failed'].includes((o as { status?: { phase?: string } }).status?.phase ?? '');
        for (const o of snapshots.filter(leftover)) this.consider('snapshot', o);
        for (const o of restores.filter(leftover)) this.consider('restore', o);
        const n = this.jobs.size;
        if (n > 0) this.ctx.log.info({ count: n }, 'recovering work left InProgress by the previous agent');
        return;
      } catch (err) {
        this.ctx.log.warn({ err: String(err), retryInMs: delay }, 'cannot list work for this node');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private parse(kind: Kind, raw: KubeObject): Work | undefined {
    const result = kind === 'snapshot' ? VMSnapshotSchema.safeParse(raw) : VMRestoreSchema.safeParse(raw);
    if (result.success) return { kind, obj: result.data } as Work;
    const id = `${raw.metadata.uid}/${raw.metadata.resourceVersion}`;
    if (!this.invalid.has(id)) {
      this.invalid.add(id);
      this.ctx.log.warn({ kind: KIND_NAME[kind], namespace: raw.metadata.namespace, name: raw.metadata.name, error: formatZodError(result.error) }, 'ignoring an object that does not parse');
    }
    return undefined;
  }

  /** Idempotent: called for every add, update and resync of every object. */
  consider(kind: Kind, raw: KubeObject): void {
    const uid = raw.metadata.uid;
    if (!uid) return;
    const job = this.jobs.get(uid);
    if (job) {
      this.maybeCancel(job, raw);
      return;
    }
    if (this.stopping) return;
    this.queue.delete(uid); // queued again below while it is still waiting for this node
    const pending = this.unwritten.get(uid);
    if (pending) {
      this.unwritten.delete(uid);
      void this.write(pending.kind, pending.ref, uid, pending.completion, raw);
      return;
    }
    const work = this.parse(kind, raw);
    if (!work) return;
    if (work.kind === 'snapshot') this.onSnapshot(work.obj);
    const { obj } = work;
    const status = obj.status;
    const mine = status?.nodeName === this.ctx.nodeName && obj.metadata.labels?.[NODE_LABEL] === this.ctx.nodeName;
    if (mine && status?.phase === 'InProgress' && !this.handled.has(uid)) {
      this.startJob(work, 'recover');
      return;
    }
    if (mine && status?.phase === 'Failed' && !this.handled.has(uid)) {
      // A failure that happened while no agent watched may have left a paused VM or a file behind.
      if (work.kind === 'restore' || hasLeftoverFile(this.ctx, work.obj)) this.startJob(work, 'cleanup');
      else this.handled.add(uid);
      return;
    }
    if (work.kind === 'snapshot' && obj.metadata.deletionTimestamp) {
      this.handleDeletion(work.obj);
      return;
    }
    if (!obj.metadata.deletionTimestamp && isAssignedTo(obj, this.ctx.nodeName) && !this.handled.has(uid)) {
      this.queue.set(uid, work);
      this.scheduleSoon();
    }
  }

  /** Once per turn of the event loop: a burst of events (a resync, a job's end) is one decision. */
  private scheduleSoon(): void {
    if (this.schedulePending) return;
    this.schedulePending = true;
    setImmediate(() => {
      this.schedulePending = false;
      this.schedule();
    });
  }

  /** Starts the queued work that fair-share picks for the free slots. */
  private schedule(): void {
    if (this.stopping) return;
    const byVm = new Map<string, QueuedWork>();
    for (const [uid, work] of this.queue) {
      const key = this.lockKey(work);
      const holder = this.reserved.get(key);
      if (holder !== undefined && holder !== uid) continue; // the VM is busy: looked at again when that job ends
      const c: QueuedWork = { id: uid, namespace: work.obj.metadata.namespace ?? '', since: String(work.obj.metadata.creationTimestamp ?? '') };
      const other = byVm.get(key);
      if (!other || c.since < other.since || (c.since === other.since && c.id < other.id)) byVm.set(key, c); // one job per VM
    }
    const running = [...this.jobs.values()].filter((j) => j.mode !== 'cleanup').map((j) => j.work.obj.metadata.namespace ?? '');
    const picked = pickWork([...byVm.values()], { ...operationSlots(this.ctx.config), running, lastServed: this.lastServed });
    for (const next of picked) {
      const work = this.queue.get(next.id)!;
      this.queue.delete(next.id);
      this.lastServed.set(next.namespace, ++this.serveTick);
      this.startJob(work, 'run');
    }
  }

  private onDeleted(raw: KubeObject): void {
    const uid = raw.metadata.uid;
    if (!uid) return;
    this.unwritten.delete(uid);
    this.deletions.delete(uid);
    this.queue.delete(uid);
    const job = this.jobs.get(uid);
    if (job) job.controller.abort(deletedCancellation(KIND_NAME[job.work.kind]));
  }

  private maybeCancel(job: Job, raw: KubeObject): void {
    if (job.controller.signal.aborted) return;
    const status = (raw as { status?: { phase?: string; conditions?: Array<{ type: string; reason: string }>; error?: { message: string } } }).status;
    if (raw.metadata.deletionTimestamp) job.controller.abort(deletedCancellation(KIND_NAME[job.work.kind]));
    else if (status?.phase === 'Failed') job.controller.abort(failedCancellation(status));
  }

  private lockKey(work: Work): string {
    const ns = work.obj.metadata.namespace ?? '';
    return work.kind === 'snapshot' ? vmKey(ns, work.obj.spec.vmName) : vmKey(ns, work.obj.status?.effective?.targetVMName ?? work.obj.spec.targetVMName ?? '');
  }

  private startJob(work: Work, mode: Mode): void {
    const uid = work.obj.metadata.uid!;
    const key = this.lockKey(work);
    const holder = this.reserved.get(key);
    if (holder !== undefined && holder !== uid) return; // the VM is busy: looked at again when that job ends
    const job: Job = { uid, work, mode, key, controller: new AbortController(), done: Promise.resolve() };
    this.jobs.set(uid, job);
    this.reserved.set(key, uid);
    if (mode !== 'run') this.handled.add(uid);
    job.done = this.runJob(job)
      .catch((err: unknown) => this.ctx.log.error({ err: String(err), uid, key }, 'job failed unexpectedly'))
      .finally(() => {
        this.jobs.delete(uid);
        if (this.reserved.get(key) === uid) this.reserved.delete(key);
        this.onWorkDone();
        if (!this.stopping) setImmediate(() => this.reconsiderAll());
      });
  }

  private async runJob(job: Job): Promise<void> {
    const { work, mode, key, controller } = job;
    const { signal } = controller;
    const ref = { namespace: work.obj.metadata.namespace!, name: work.obj.metadata.name! };
    const log = this.ctx.log.child({ kind: KIND_NAME[work.kind], namespace: ref.namespace, name: ref.name, uid: job.uid, mode });
    // A restore's reads (its file, the VM pod) run beside the lock and the claim's round trip; the VM is touched only once claimed.
    const early = mode === 'run' && work.kind === 'restore' && !signal.aborted ? prepareRestore(this.ctx, work.obj) : undefined;
    const release = await this.ctx.locks.acquire(key, job.uid, LOCK_WAIT_MS);
    if (!release) {
      early?.discard();
      log.warn({ vm: key }, 'the VM stayed busy; trying again later');
      return;
    }
    try {
      if (mode === 'run') {
        if (signal.aborted || !(await this.claim(work, log))) {
          early?.discard();
          return;
        }
        this.handled.add(job.uid);
      }
      log.info(mode === 'run' ? 'claimed; running' : mode);
      const completion = await this.execute(work, mode, signal, early?.prepared);
      if (!completion) return;
      // The VM's state is final: the inventory may query it now and publish beside the status write
      // (the operator holds the VM's next operation until an inventory postdates this one).
      release();
      this.onWorkDone();
      log.info({ outcome: completion.event.reason, message: completion.event.message }, 'finished');
      await this.write(work.kind, ref, job.uid, completion, work.obj);
    } finally {
      release();
    }
  }

  private execute(work: Work, mode: Mode, signal: AbortSignal, prepared?: Promise<PodRestorePrep>): Promise<Completion | undefined> {
    if (work.kind === 'snapshot') {
      if (mode === 'run') return runSnapshot(this.ctx, work.obj, signal);
      return mode === 'recover' ? recoverSnapshot(this.ctx, work.obj) : cleanUpFailedSnapshot(this.ctx, work.obj);
    }
    if (mode === 'run') return runRestore(this.ctx, work.obj, signal, prepared);
    return mode === 'recover' ? recoverRestore(this.ctx, work.obj, signal) : cleanUpFailedRestore(this.ctx, work.obj);
  }

  /** Pending -> InProgress, guarded by the resourceVersion seen: a 409 means someone changed it first. */
  private async claim(work: Work, log: AgentContext['log']): Promise<boolean> {
    const { obj } = work;
    const ref = { namespace: obj.metadata.namespace!, name: obj.metadata.name! };
    const message = `node ${this.ctx.nodeName} is ${work.kind === 'snapshot' ? 'saving' : 'restoring'} the VM`;
    try {
      const body =
        work.kind === 'snapshot'
          ? claimPatch<VMSnapshotStatus>(work.obj, message, new Date(), snapshotClaimExtra(this.ctx, work.obj))
          : claimPatch<VMRestoreStatus>(work.obj, message, new Date());
      await this.ctx.kube.patchStatus(RESOURCE[work.kind], ref, body);
      return true;
    } catch (err) {
      const code = statusCode(err);
      if (code === 409) log.debug('changed since it was seen; not claimed');
      else if (code !== 404) log.warn({ err: String(err) }, 'cannot claim; trying again later');
      return false;
    }
  }

  private async write(kind: Kind, ref: { namespace: string; name: string }, uid: string, completion: Completion, obj: KubeObject): Promise<void> {
    if (!completion.skipStatus) {
      const result = await patchStatusWithRetry(this.ctx, RESOURCE[kind], ref, completion.status);
      if (result === 'failed') {
        this.unwritten.set(uid, { kind, ref, completion });
        return;
      }
      if (result === 'refused') return; // already finished: its outcome and event stand
    }
    await this.ctx.events.record(obj, completion.event.type, completion.event.reason, completion.event.message);
  }

  private handleDeletion(snap: VMSnapshot): void {
    const uid = snap.metadata.uid!;
    if (this.deletions.has(uid)) return;
    const ref = { namespace: snap.metadata.namespace!, name: snap.metadata.name! };
    let removal: Promise<Completion> | undefined;
    try {
      removal = deleteSnapshotFile(this.ctx, snap);
    } catch (err) {
      this.ctx.log.warn({ err: String(err), ...ref }, 'cannot remove the snapshot file');
      return;
    }
    if (!removal) return;
    // Busy from here: events that arrive while the kernel frees the file are not a second removal.
    this.deletions.set(uid, 'busy');
    void removal
      .then(async (completion) => {
        this.ctx.log.info({ ...ref, message: completion.event.message }, 'VMSnapshot deleted');
        await this.write('snapshot', ref, uid, completion, snap as unknown as KubeObject);
        if (this.unwritten.has(uid)) this.deletions.delete(uid);
        else this.deletions.set(uid, 'done');
      })
      .catch((err: unknown) => {
        this.ctx.log.warn({ err: String(err), ...ref }, 'cannot remove the snapshot file');
        this.deletions.delete(uid); // tried again on the next event or resync
      });
  }

  private reconsiderAll(): void {
    for (const [i, kind] of [[0, 'snapshot'], [1, 'restore']] as const) {
      for (const o of this.informers[i]?.informer.list() ?? []) this.consider(kind, o as KubeObject);
    }
  }

  /**
   * Stops watching; running saves are cancelled (their VMs resumed, partial
   * files removed, objects Failed with reason Cancelled). Restores get a grace
   * period; their QEMUs run on without the agent either way.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.informers.map((i) => i.stop().catch(() => undefined)));
    const cancel: Cancellation = shutdownCancellation();
    const saves: Array<Promise<void>> = [];
    const restores: Array<Promise<void>> = [];
    for (const job of this.jobs.values()) {
      const isRestoreRun = job.work.kind === 'restore' && job.mode === 'run';
      if (!isRestoreRun) job.controller.abort(cancel);
      (isRestoreRun ? restores : saves).push(job.done);
    }
    const within = (ps: Array<Promise<void>>, ms: number) =>
      Promise.race([Promise.all(ps), new Promise((r) => setTimeout(r, ms).unref())]);
    await Promise.all([within(saves, SAVE_CANCEL_GRACE_MS), within(restores, RESTORE_GRACE_MS)]);
  }

  /** For logs and tests: what is running now. */
  running(): Array<{ uid: string; kind: Kind; mode: Mode; vm: string }> {
    return [...this.jobs.values()].map((j) => ({ uid: j.uid, kind: j.work.kind, mode: j.mode, vm: j.key }));
  }
}
