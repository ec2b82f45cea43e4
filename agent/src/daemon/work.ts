// Watches the VMSnapshots and VMRestores labelled with this node and executes what decide.ts
// decides for each: at most one job (a run: claim, then save or restore; a recovery of what a
// previous agent left InProgress; a clean-up after a failure), a file deletion, a cancellation, or
// a status written again. One job per VM at a time; new runs wait in a queue for one of the
// node's slots, shared fairly between namespaces (decideRuns).
import { NODE_LABEL, Phase, VMRestoreSchema, VMSnapshotSchema, formatZodError, operationSlots, type VMSnapshot } from '../../../api/index.js';
import { startInformer, type KubeObject, type ResilientInformer } from '../../../kube/client.js';
import { deletedCancellation, failedCancellation, shutdownCancellation, type Cancellation } from './cancellation.js';
import type { Completion } from './completion.js';
import { patchStatusWithRetry, type AgentContext } from './context.js';
import { deleteSnapshotFile } from './deletion.js';
import { hasLeftoverFile } from './recovery.js';
import { prepareRestore } from './restore-runner.js';
import { claim, perform, KIND_NAME, RESOURCE } from './job-steps.js';
import { decide, decideRuns, lockKey, type Action, type Kind, type Mode, type Work } from './decide.js';
import { WorkMemory } from './work-memory.js';

interface Job {
  uid: string;
  work: Work;
  mode: Mode;
  key: string;
  controller: AbortController;
  done: Promise<void>;
}

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
  /** Everything else remembered per object (handled, deletions, unwritten statuses, the queue). */
  readonly memory = new WorkMemory();
  /** namespace -> when it last got a slot (serveTick), for round-robin between namespaces. */
  private readonly lastServed = new Map<string, number>();
  private serveTick = 0;
  private schedulePending = false;
  private informers: Array<ResilientInformer<KubeObject>> = [];
  private stopping = false;
  /** Both watches have listed once: their caches hold every object of this node. */
  private synced = false;

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
            onResync: () => this.prune(),
            onError: (err) => {
              if (!this.stopping) this.ctx.log.warn({ err: String(err), resource: RESOURCE[kind] }, 'watch failed; restarting it');
            },
          },
          { labelSelector: this.selector },
        ),
      );
    }
    const aborted = new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
    const synced = Promise.all(this.informers.map((i) => i.synced)).then(() => void (this.synced = true));
    await Promise.race([synced, aborted]);
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
        const leftover = (o: KubeObject) => {
          const phase = (o as { status?: { phase?: string } }).status?.phase;
          return phase === Phase.InProgress || phase === Phase.Failed;
        };
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
    if (this.memory.firstInvalid(raw.metadata.uid!, raw.metadata.resourceVersion ?? '')) {
      this.ctx.log.warn({ kind: KIND_NAME[kind], namespace: raw.metadata.namespace, name: raw.metadata.name, error: formatZodError(result.error) }, 'ignoring an object that does not parse');
    }
    return undefined;
  }

  /** Idempotent: called for every add, update and resync of every object. */
  consider(kind: Kind, raw: KubeObject): void {
    const uid = raw.metadata.uid;
    if (!uid) return;
    const job = this.jobs.get(uid);
    if (!job && !this.stopping) this.memory.queue.delete(uid); // queued again below while it is still waiting for this node
    const work = job || this.stopping || this.memory.hasUnwritten(uid) ? undefined : this.parse(kind, raw);
    if (work?.kind === 'snapshot') this.onSnapshot(work.obj);
    const seen = { uid, deleting: !!raw.metadata.deletionTimestamp, phase: (raw as { status?: { phase?: string } }).status?.phase, work };
    const held = this.memory.held(uid, job && { mode: job.mode, cancelled: job.controller.signal.aborted });
    const action = decide(seen, held, { name: this.ctx.nodeName, stopping: this.stopping, leftoverFile: (s) => hasLeftoverFile(this.ctx, s) });
    this.execute(kind, raw, work, job, action);
  }

  private execute(kind: Kind, raw: KubeObject, work: Work | undefined, job: Job | undefined, action: Action): void {
    const uid = raw.metadata.uid!;
    switch (action.do) {
      case 'cancel':
        job!.controller.abort(action.cause === 'deleted' ? deletedCancellation(KIND_NAME[kind]) : failedCancellation((raw as { status?: Parameters<typeof failedCancellation>[0] }).status));
        return;
      case 'write': {
        const pending = this.memory.takeUnwritten(uid)!;
        void this.write(pending.kind, pending.ref, uid, pending.completion, raw);
        return;
      }
      case 'recover':
      case 'cleanup':
        this.startJob(work!, action.do);
        return;
      case 'delete-file':
        this.handleDeletion(work!.obj as VMSnapshot);
        return;
      case 'queue':
        this.memory.queue.set(uid, work!);
        this.scheduleSoon();
        return;
      case 'nothing':
        if (action.settle) this.memory.markHandled(uid);
        if (action.forget) this.memory.forgetSettled(uid);
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
    const running = [...this.jobs.values()].filter((j) => j.mode !== 'cleanup').map((j) => j.work.obj.metadata.namespace ?? '');
    const picked = decideRuns(this.memory.queue, { ...operationSlots(this.ctx.config), reserved: this.reserved, running, lastServed: this.lastServed });
    for (const next of picked) {
      const work = this.memory.queue.get(next.id)!;
      this.memory.queue.delete(next.id);
      this.lastServed.set(next.namespace, ++this.serveTick);
      this.startJob(work, 'run');
    }
  }

  private onDeleted(raw: KubeObject): void {
    const uid = raw.metadata.uid;
    if (!uid) return;
    this.memory.forget(uid);
    const job = this.jobs.get(uid);
    if (job) job.controller.abort(deletedCancellation(KIND_NAME[job.work.kind]));
  }

  private startJob(work: Work, mode: Mode): void {
    const uid = work.obj.metadata.uid!;
    const key = lockKey(work);
    const holder = this.reserved.get(key);
    if (holder !== undefined && holder !== uid) return; // the VM is busy: looked at again when that job ends
    const job: Job = { uid, work, mode, key, controller: new AbortController(), done: Promise.resolve() };
    this.jobs.set(uid, job);
    this.reserved.set(key, uid);
    if (mode !== 'run') this.memory.markHandled(uid);
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
        if (signal.aborted || !(await claim(this.ctx, work, log))) {
          early?.discard();
          return;
        }
        this.memory.markHandled(job.uid);
      }
      log.info(mode === 'run' ? 'claimed; running' : mode);
      const completion = await perform(this.ctx, work, mode, signal, early?.prepared);
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

  private async write(kind: Kind, ref: { namespace: string; name: string }, uid: string, completion: Completion, obj: KubeObject): Promise<void> {
    if (!completion.skipStatus) {
      const result = await patchStatusWithRetry(this.ctx, RESOURCE[kind], ref, completion.status);
      if (result === 'failed') {
        this.memory.keepUnwritten(uid, { kind, ref, completion });
        return;
      }
      if (result === 'refused') return; // already finished: its outcome and event stand
    }
    await this.ctx.events.record(obj, completion.event.type, completion.event.reason, completion.event.message);
  }

  private handleDeletion(snap: VMSnapshot): void {
    const uid = snap.metadata.uid!;
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
    this.memory.deletion(uid, 'busy');
    void removal
      .then(async (completion) => {
        this.ctx.log.info({ ...ref, message: completion.event.message }, 'VMSnapshot deleted');
        await this.write('snapshot', ref, uid, completion, snap as unknown as KubeObject);
        this.memory.deletion(uid, this.memory.hasUnwritten(uid) ? undefined : 'done');
      })
      .catch((err: unknown) => {
        this.ctx.log.warn({ err: String(err), ...ref }, 'cannot remove the snapshot file');
        this.memory.deletion(uid, undefined); // tried again on the next event or resync
      });
  }

  /** A deletion missed while a watch was down: memory keeps only objects the caches hold, or a job runs for. */
  private prune(): void {
    if (!this.synced || this.stopping) return;
    const live = new Set(this.jobs.keys());
    for (const i of this.informers) for (const o of i.informer.list()) if (o.metadata?.uid) live.add(o.metadata.uid);
    this.memory.retainOnly(live);
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
