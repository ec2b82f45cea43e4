// Uploads each snapshot of a class with a repository once its save has succeeded, in the
// background: the VM was resumed (or stopped) by the save and is never held up by the upload.
// Progress and the result go to status.upload, the Uploaded condition and events.
import fs from 'node:fs';
import { Phase, setCondition, snapshotObjectPrefix, UploadPhase, type UploadStatus, type VMSnapshot } from '../../../api/index.js';
import type { KubeObject } from '../../../kube/client.js';
import type { AgentContext } from '../daemon/context.js';
import { patchStatusWithRetry } from '../daemon/context.js';
import { repositoryTarget } from './access.js';
import { uploadSnapshot } from './upload.js';

export const UPLOADED_CONDITION = 'Uploaded';
const PROGRESS_EVERY_MS = 2000;
/** The abort reason of an upload whose snapshot is being deleted. */
const DELETED = 'deleted';

/** Whether this node's agent should (re)start the upload of a snapshot now. */
export function shouldUpload(snap: VMSnapshot, nodeName: string, running: boolean): boolean {
  const s = snap.status;
  if (running || snap.metadata.deletionTimestamp) return false;
  if (!s?.effective?.repository || s.phase !== Phase.Succeeded || !s.readyToUse || !s.file?.path) return false;
  if (s.nodeName !== nodeName) return false;
  // Pending/Uploading with no upload running here: a previous agent stopped mid-way; start over.
  return s.upload === undefined || s.upload.phase === UploadPhase.Pending || s.upload.phase === UploadPhase.Uploading;
}

export class SnapshotUploads {
  private readonly running = new Map<string, AbortController>();

  constructor(
    private readonly ctx: AgentContext,
    /** The agent's namespace: where the repositories' Secrets are. */
    private readonly namespace: string,
  ) {}

  consider(snap: VMSnapshot): void {
    const uid = snap.metadata.uid!;
    if (snap.metadata.deletionTimestamp) this.running.get(uid)?.abort(DELETED);
    if (!shouldUpload(snap, this.ctx.nodeName, this.running.has(uid))) return;
    const controller = new AbortController();
    this.running.set(uid, controller);
    void this.upload(snap, controller.signal).finally(() => this.running.delete(uid));
  }

  async stop(): Promise<void> {
    for (const c of this.running.values()) c.abort();
  }

  private async patch(snap: VMSnapshot, upload: UploadStatus, condition?: { status: 'True' | 'False'; reason: string; message: string }): Promise<void> {
    const ref = { namespace: snap.metadata.namespace!, name: snap.metadata.name! };
    const status: Record<string, unknown> = { upload };
    if (condition) {
      const fresh = (await this.ctx.kube.get<VMSnapshot>('vmSnapshot', ref).catch(() => undefined)) ?? snap;
      status.conditions = setCondition(fresh.status?.conditions, { type: UPLOADED_CONDITION, ...condition });
    }
    await patchStatusWithRetry(this.ctx, 'vmSnapshot', ref, status);
  }

  private async upload(snap: VMSnapshot, signal: AbortSignal): Promise<void> {
    const repo = snap.status!.effective!.repository!;
    const file = snap.status!.file!.path;
    const prefix = snapshotObjectPrefix(repo, { namespace: snap.metadata.namespace!, name: snap.metadata.name!, uid: snap.metadata.uid! });
    const base = { bucket: repo.bucket, prefix, compression: repo.compression ?? 'None', encrypted: !!repo.encryptionKeySecret } as const;
    const started = Date.now();
    const log = this.ctx.log.child({ namespace: snap.metadata.namespace, name: snap.metadata.name, bucket: repo.bucket, prefix });
    try {
      if (!fs.existsSync(file)) throw new Error(`the snapshot file ${file} is not on node ${this.ctx.nodeName}`);
      const target = await repositoryTarget(this.ctx.kube, this.namespace, repo, prefix);
      await this.patch(snap, { phase: UploadPhase.Uploading, ...base, bytesDone: 0 });
      await this.ctx.events.record(snap as unknown as KubeObject, 'Normal', 'UploadStarted', `uploading to bucket ${repo.bucket} at ${prefix}`);
      let last = 0;
      const run = () =>
        uploadSnapshot(file, target, {
          signal,
          onProgress: (p) => {
            if (Date.now() - last < PROGRESS_EVERY_MS) return;
            last = Date.now();
            void this.ctx.kube.patchStatus('vmSnapshot', { namespace: snap.metadata.namespace!, name: snap.metadata.name! }, { status: { upload: { phase: UploadPhase.Uploading, ...base, ...p } } }).catch(() => undefined);
          },
        });
      const result = this.ctx.metrics ? await this.ctx.metrics.transfer('upload', run, (r) => r.dataBytes) : await run();
      const durationMs = Date.now() - started;
      const mib = result.dataBytes / (1 << 20);
      const message = `uploaded ${mib.toFixed(1)} MiB of present pages (${(result.storedBytes / (1 << 20)).toFixed(1)} MiB stored, ${result.parts} parts) in ${(durationMs / 1000).toFixed(1)} s`;
      await this.patch(
        snap,
        { phase: UploadPhase.Uploaded, ...base, bytesDone: result.dataBytes, bytesTotal: result.dataBytes, storedBytes: result.storedBytes, completionTime: new Date().toISOString(), durationMs },
        { status: 'True', reason: 'Uploaded', message },
      );
      await this.ctx.events.record(snap as unknown as KubeObject, 'Normal', 'Uploaded', message);
      log.info({ dataBytes: result.dataBytes, storedBytes: result.storedBytes, durationMs }, 'uploaded');
    } catch (err) {
      const deleted = signal.aborted && signal.reason === DELETED;
      const message = deleted ? 'the upload was cancelled: the snapshot is being deleted' : (err as Error).message;
      log.warn({ err: message }, 'upload failed');
      // Stopped with the agent: a restarted agent starts it over. Cancelled by the deletion: Failed,
      // which tells the operator no upload runs any more and the copy can be removed.
      if (signal.aborted && !deleted) return;
      await this.patch(snap, { phase: UploadPhase.Failed, ...base, completionTime: new Date().toISOString(), message }, { status: 'False', reason: 'UploadFailed', message });
      await this.ctx.events.record(snap as unknown as KubeObject, 'Warning', 'UploadFailed', message);
    }
  }
}
