// Runs one claimed VMRestore: checks the snapshot and its file, handles a VM
// already running at the target (spec.ifRunning), then launches QEMU from the
// snapshot's recorded command line and loads the file into it.
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_RELEASE_NAMESPACE, Reason, Verify, restoreVerify, type EffectiveRestoreSpec, type VMRestore, type VMSnapshot } from '../../../api/index.js';
import { relaunchArgv, restoreVm, lazyResidency, OverlayLedger, agentLaunchLogPath, type ArgvRewrite, type RestoreResult, type LazyResidency } from '../engine/index.js';
import { dropReplacedLayers, topLayers } from './disk-layers.js';
import { verifySnapshotFile } from '../snapshot-file/verify.js';
import { fetchSnapshot, needsFetch, type FetchOptions } from '../objstore/fetch.js';
import { earlyQemu } from './early-qemu.js';
import { readHeader } from '../snapshot-file/read.js';
import { traceStep } from '../clock.js';
import { cancellationOf, type Cancellation } from './cancellation.js';
import type { Completion } from './completion.js';
import { useFile, type AgentContext } from './context.js';
import { assertUnder, vmDir } from './paths.js';
import { probeQmp, quitQemu } from './qemu-control.js';
import { runningLazyStatus } from './lazy-residency.js';
import { readsWithDirectIO, restoreSettings, type RestoreSettings } from './settings.js';
import { isPodVms } from '../vm/pod-vms.js';
import { preparePodRestore, runPodRestore, type PodRestorePrep } from './pod-restore.js';
import { failedStatus, restoreSucceededStatus, restoreSummary, type RestoreOutcome } from './status.js';
import { headerTrust } from './header-trust.js';
import type { HeaderTrust } from '../snapshot-file/header.js';
import { reasonOf, VmsnapError } from '../errors.js';
import { withCleanup, type CleanupStack } from '../cleanup-stack.js';
import type { QmpClient } from '../qmp/client.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';

/** Set in the environment of every QEMU the agent launches for a restore: recovery recognises its own. */
export const RESTORE_UID_ENV = 'VMSNAP_RESTORE_UID';

/** A restore refused before anything changed, with the status reason that says why. */
export class RestoreRefused extends VmsnapError {
  override name = 'RestoreRefused';
  constructor(reason: Reason, message: string) {
    super(message, { reason });
  }
}

/**
 * The VMSnapshot's file, checked: same namespace, ready, under this agent's storage root, present; and what its header must prove.
 * Another node's snapshot is fetched from its repository (`fetch`: cancellation, and the header as soon as it arrived).
 */
export async function snapshotFileFor(
  ctx: AgentContext,
  restore: VMRestore,
  fetch: Pick<FetchOptions, 'signal' | 'onHeader'> = {},
): Promise<{ file: string; trust: Required<HeaderTrust> }> {
  const ns = restore.metadata.namespace!;
  const name = restore.status!.effective!.snapshotName;
  const snap = await ctx.kube.get<VMSnapshot>('vmSnapshot', { namespace: ns, name });
  if (!snap) throw new RestoreRefused(Reason.SnapshotNotFound, `VMSnapshot ${ns}/${name} (spec.snapshotName) does not exist`);
  if (snap.metadata.deletionTimestamp) throw new RestoreRefused(Reason.SnapshotNotFound, `VMSnapshot ${ns}/${name} is being deleted`);
  const file = snap.status?.file?.path;
  if (snap.status?.phase === 'Succeeded' && snap.status.readyToUse && needsFetch(snap, ctx.nodeName)) {
    // Another node's snapshot: a verified local copy from the class's repository.
    try {
      const forDirectIO = readsWithDirectIO(restoreSettings(restore.status!.effective!));
      return { file: await fetchSnapshot(ctx, ctx.namespace ?? DEFAULT_RELEASE_NAMESPACE, snap, { ...fetch, forDirectIO }), trust: headerTrust(ctx.config.storageRoot, snap) };
    } catch (err) {
      throw new RestoreRefused(Reason.SnapshotNotFound, `cannot fetch VMSnapshot ${ns}/${name} from its repository: ${(err as Error).message}`);
    }
  }
  if (snap.status?.phase !== 'Succeeded' || !snap.status?.readyToUse || !file) {
    throw new RestoreRefused(
      snap.status?.phase === 'Failed' ? Reason.SnapshotFailed : Reason.SnapshotNotFound,
      `VMSnapshot ${ns}/${name} is not ready to use (phase ${snap.status?.phase ?? 'unknown'}): restore from a snapshot that Succeeded`,
    );
  }
  try {
    assertUnder(path.join(ctx.config.storageRoot, ns), file, `the file of VMSnapshot ${ns}/${name}`);
  } catch (err) {
    throw new RestoreRefused(Reason.Failed, (err as Error).message);
  }
  if (!fs.existsSync(file)) {
    throw new RestoreRefused(
      Reason.SnapshotNotFound,
      `the file of VMSnapshot ${ns}/${name} (${file}) is not on node ${ctx.nodeName}` +
        (snap.status.nodeName && snap.status.nodeName !== ctx.nodeName ? ` (it was saved on node ${snap.status.nodeName})` : ''),
    );
  }
  return { file, trust: headerTrust(ctx.config.storageRoot, snap) };
}

/**
 * For a copy: the source VM's directory becomes the target's, and -name the
 * target's name. Refuses a copy whose RAM file would be the source's.
 */
export function copyRewrite(args: {
  recordedArgv: string[];
  recordedSocket: string;
  targetSocket: string;
  sourceDirs: string[];
  targetDir: string;
  targetName: string;
}): ArgvRewrite {
  const rewrite: ArgvRewrite = {
    paths: [...new Set(args.sourceDirs)].filter((d) => d !== args.targetDir).map((d): [string, string] => [d, args.targetDir]),
    name: args.targetName,
  };
  const argv = relaunchArgv(args.recordedArgv, args.recordedSocket, args.targetSocket, [], rewrite);
  for (const arg of argv) {
    const m = /(?:^|,)mem-path=([^,]+)/.exec(arg);
    if (m && !path.resolve(m[1]!).startsWith(args.targetDir + path.sep)) {
      throw new RestoreRefused(
        Reason.Failed,
        `the snapshot's VM keeps its RAM in ${m[1]}, outside its VM directory: a copy would share that file with the source VM; ` +
          'restore into the source VM (omit spec.targetVMName) instead',
      );
    }
  }
  return rewrite;
}

/** The agent's stall bound for a restore's load (restoreVm's stallMs and onStalled). */
export function loadBound(ctx: AgentContext, restore: VMRestore): { stallMs: number; onStalled: (err: Error) => void } {
  const ref = { namespace: restore.metadata.namespace, name: restore.metadata.name };
  return {
    stallMs: ctx.config.stallTimeoutSeconds * 1000,
    onStalled: (err) => ctx.log.warn({ ...ref, message: err.message }, 'the restore stalled; ending it'),
  };
}

/** The error's own status reason (MigrationStalled for a load that stood still: agent setting stallTimeoutSeconds), else Failed. */
export const failureReason = reasonOf;

/** The Failed status of a restore and its Warning event, for agent-launched and VM-pod restores alike. */
export function restoreFailed(restore: VMRestore, reason: Reason, message: string): Completion {
  return { status: failedStatus(restore, reason, message, new Date()), event: { type: 'Warning', reason: 'RestoreFailed', message } };
}

/**
 * The Succeeded status of a finished restore and the outcome it was built from, for agent-launched
 * and VM-pod restores alike; a lazy restore that ran eagerly gets its LazyFallback event here.
 */
export async function restoreSucceeded(
  ctx: AgentContext,
  restore: VMRestore,
  r: RestoreResult,
  at: {
    file: string;
    target: string;
    started: number;
    downtimeFrom: number;
    lazyFallbackReason?: string;
    /** The restored QEMU's use of the mapped file (measured after the clock stops). */
    residency: (lazyFile: string) => LazyResidency | undefined | Promise<LazyResidency | undefined>;
  },
): Promise<{ status: Record<string, unknown>; outcome: RestoreOutcome }> {
  const lazyFallbackReason = at.lazyFallbackReason ?? r.lazyFallbackReason;
  if (lazyFallbackReason) {
    void ctx.events.record(restore, 'Warning', 'LazyFallback', `restoreMode Lazy is not possible for this VM, restored eagerly: ${lazyFallbackReason}`);
  }
  const now = Date.now();
  const outcome = {
    path: at.file,
    bytes: r.bytes,
    ramBytes: r.ramBytes,
    durationMs: now - at.started,
    loadMs: r.durationMs,
    downtimeMs: now - at.downtimeFrom,
    directIO: r.directIO,
    directIOReason: r.directIOReason,
    running: r.running,
    target: at.target,
    mode: r.mode,
    lazyFallbackReason,
    lazy: r.lazy ? runningLazyStatus(r.lazy.file, r.lazy.mappedBytes, await at.residency(r.lazy.file), new Date(now)) : undefined,
  };
  return { status: restoreSucceededStatus(restore, outcome, new Date(now)) as Record<string, unknown>, outcome };
}

/**
 * The read-only part of a VM-pod restore (pod-restore.ts), started before the claim so the
 * claim's round trip and these reads overlap; undefined where there is none to start.
 * `discard` ends it when the claim failed.
 */
export function prepareRestore(ctx: AgentContext, restore: VMRestore): { prepared: Promise<PodRestorePrep>; discard(): void } | undefined {
  if (!isPodVms(ctx.discovery) || !restore.status?.effective) return undefined;
  const prepared = preparePodRestore(ctx, ctx.discovery, restore);
  prepared.catch(() => undefined); // its error is the runner's to report, after the claim
  return { prepared, discard: () => void prepared.then((p) => p.release(), () => undefined) };
}

/** One restore's names and settings, from its effective spec. */
interface RestoreJob {
  ns: string;
  effective: EffectiveRestoreSpec;
  /** namespace/targetVMName, for messages. */
  target: string;
  settings: RestoreSettings;
}

/**
 * Named steps over one clean-up stack (the snapshot file in use, the QMP connection of a VM
 * being replaced); every failure becomes the Failed status that says why.
 */
export async function runRestore(ctx: AgentContext, restore: VMRestore, signal: AbortSignal, prepared?: Promise<PodRestorePrep>): Promise<Completion> {
  if (isPodVms(ctx.discovery)) return runPodRestore(ctx, ctx.discovery, restore, signal, prepared);
  const started = Date.now();
  traceStep(`agent: restoring ${restore.metadata.namespace}/${restore.metadata.name}`);
  const effective = restore.status!.effective!;
  const job: RestoreJob = {
    ns: restore.metadata.namespace!,
    effective,
    target: `${restore.metadata.namespace}/${effective.targetVMName}`,
    settings: restoreSettings(effective),
  };
  try {
    return await withCleanup(async (undo) => {
      const relaunch = { env: { [RESTORE_UID_ENV]: restore.metadata.uid ?? '' }, logPath: agentLaunchLogPath(ctx.config.storageRoot, job.ns, effective.targetVMName) };
      // Another node's snapshot: QEMU starts while the snapshot downloads (early-qemu.ts).
      const early = earlyQemu({
        lazy: !!job.settings.lazy,
        target: (meta) => targetOf(ctx, job, meta),
        ...relaunch,
        onStarted: (socket) => ctx.log.info({ restore: restore.metadata.name, socket }, 'QEMU started while the snapshot downloads'),
        onSkipped: (reason) => ctx.log.info({ restore: restore.metadata.name, reason }, 'QEMU starts after the download'),
      });
      const earlyQuit = undo.defer('quit the QEMU started during the download', () => early.abandon());
      const { file, trust } = await snapshotFileFor(ctx, restore, { signal, onHeader: early.onHeader });
      undo.defer(`release ${file}`, useFile(ctx, file));
      // The header only (written by this agent for this VMSnapshot): restoreVm checks the whole file, for a lazy restore while QEMU starts.
      const meta = readHeader(file, trust).metadata;
      const { targetSocket, rewrite } = await targetOf(ctx, job, meta);
      const fromDownload = await early.started();
      if (fromDownload && fromDownload.targetSocket !== targetSocket) await earlyQuit.now();
      const launched = fromDownload?.targetSocket === targetSocket ? fromDownload.launch : undefined;
      // The early QEMU is the one at the target socket (its start found none there).
      const running = launched ? undefined : await runningTarget(job, targetSocket, undo);
      // Checked before a running VM is replaced: a bad file must not cost the user their VM.
      if (running) verifySnapshotFile(file, trust);
      recordStarted(ctx, restore, job, file, !!running);
      const replaced = running ? await replaceRunning(ctx, job, targetSocket, running, signal) : { downtimeFrom: started, layers: [] };
      const r = await restoreVm({
        inPath: file,
        qmpSocket: targetSocket,
        channels: job.settings.channels,
        directIO: job.settings.directIO,
        launch: true,
        paused: job.settings.paused,
        verify: restoreVerify(restore) === Verify.Digests,
        relaunch: { rewrite, ...relaunch },
        early: launched,
        trust,
        ledger: OverlayLedger.forStorageRoot(ctx.config.storageRoot),
        signal,
        lazy: job.settings.lazy,
        ...loadBound(ctx, restore),
      });
      earlyQuit.keep(); // restoreVm used it (or quit it)
      return restoredCompletion(ctx, restore, job, r, { file, started, downtimeFrom: replaced.downtimeFrom, replacedLayers: replaced.layers });
    });
  } catch (err) {
    const cancelled = cancellationOf(signal);
    if (cancelled) return cancelledCompletion(restore, cancelled);
    if (err instanceof RestoreRefused) return restoreFailed(restore, err.reason, err.message);
    return restoreFailed(restore, failureReason(err), `the restore into VM ${job.target} failed: ${(err as Error).message}`);
  }
}

/**
 * Where the VM is restored: its QMP socket under the target VM's directory, and for a copy, or a
 * restore on another node whose VM directory is elsewhere, the recorded directory rewritten to
 * this node's directory of the target VM.
 */
async function targetOf(ctx: AgentContext, { ns, effective }: RestoreJob, meta: SnapshotMetadata): Promise<{ targetSocket: string; rewrite?: ArgvRewrite }> {
  const targetDir = vmDir(ctx.config.vmRoot, ns, effective.targetVMName);
  const discovered = await ctx.discovery.find(ns, effective.targetVMName);
  const socketName = path.basename(meta.vm.qmpSocket) || 'qmp.sock';
  const targetSocket = assertUnder(targetDir, discovered?.qmpSocket ?? path.join(targetDir, socketName), 'the target QMP socket');
  if (effective.targetVMName === effective.sourceVMName && path.dirname(meta.vm.qmpSocket) === targetDir) return { targetSocket };
  const rewrite = copyRewrite({
    recordedArgv: meta.qemu.argv,
    recordedSocket: meta.vm.qmpSocket,
    targetSocket,
    sourceDirs: [path.dirname(meta.vm.qmpSocket), path.join(ctx.config.vmRoot, ns, effective.sourceVMName)],
    targetDir,
    targetName: effective.targetVMName,
  });
  return { targetSocket, rewrite };
}

/** The QMP connection of a VM already running at the target (closed at the end), or undefined; refused unless spec.ifRunning is Replace. */
async function runningTarget({ target, settings }: RestoreJob, targetSocket: string, undo: CleanupStack): Promise<QmpClient | undefined> {
  const probe = await probeQmp(targetSocket, 1000);
  if (probe.kind === 'unreachable') {
    throw new RestoreRefused(Reason.VMRunning, `the QEMU of VM ${target} at ${targetSocket} does not answer QMP: ${probe.message}`);
  }
  if (probe.kind === 'absent') return undefined;
  undo.defer(`close the QMP connection of VM ${target}`, () => probe.client.close());
  if (!settings.replaceRunning) {
    throw new RestoreRefused(
      Reason.VMRunning,
      `VM ${target} is running (a QEMU answers on ${targetSocket}) and spec.ifRunning is Fail: ` +
        'stop the VM first, or set spec.ifRunning: Replace to stop it and restore over it',
    );
  }
  return probe.client;
}

function recordStarted(ctx: AgentContext, restore: VMRestore, { effective, target, settings }: RestoreJob, file: string, replacing: boolean): void {
  void ctx.events.record(
    restore,
    'Normal',
    'RestoreStarted',
    `restoring VMSnapshot ${effective.snapshotName} (${file}) into VM ${target} on node ${ctx.nodeName} ` +
      `(${settings.lazy ? 'Lazy' : `${settings.channels} channels, direct I/O ${effective.directIO}`}, then ${effective.afterRestore}` +
      `${replacing ? '; replacing the running VM' : ''})`,
  );
}

/** spec.ifRunning Replace: quits the running VM (downtime starts here), noting its disk layers to drop once the restore succeeded. */
async function replaceRunning(
  ctx: AgentContext,
  { target }: RestoreJob,
  targetSocket: string,
  client: QmpClient,
  signal: AbortSignal,
): Promise<{ downtimeFrom: number; layers: string[] }> {
  if (signal.aborted) throw signal.reason;
  const downtimeFrom = Date.now();
  const layers = await topLayers(client).catch(() => []);
  ctx.log.info({ vm: target, socket: targetSocket }, 'spec.ifRunning Replace: quitting the running VM');
  await quitQemu(client);
  return { downtimeFrom, layers };
}

async function restoredCompletion(
  ctx: AgentContext,
  restore: VMRestore,
  { target }: RestoreJob,
  r: RestoreResult,
  at: { file: string; started: number; downtimeFrom: number; replacedLayers: string[] },
): Promise<Completion> {
  const { status, outcome } = await restoreSucceeded(ctx, restore, r, {
    file: at.file,
    target,
    started: at.started,
    downtimeFrom: at.downtimeFrom,
    residency: (lazyFile) => (r.launched ? lazyResidency(r.launched.pid, lazyFile) : undefined),
  });
  const launched = r.launched ? `; QEMU pid ${r.launched.pid}, log ${r.launched.logPath}` : '';
  const dropped = dropReplacedLayers(ctx, at.replacedLayers);
  const droppedNote = dropped.length > 0 ? `; removed the replaced VM's disk layers ${dropped.join(', ')}` : '';
  return {
    status,
    event: { type: 'Normal', reason: 'RestoreSucceeded', message: restoreSummary(outcome) + launched + droppedNote },
  };
}

function cancelledCompletion(restore: VMRestore, c: Cancellation): Completion {
  const message = `${c.message}; the restore was cancelled (a QEMU it had launched for the restore was stopped)`;
  return {
    status: failedStatus(restore, c.reason, message, new Date()),
    event: { type: 'Warning', reason: 'RestoreFailed', message },
  };
}
