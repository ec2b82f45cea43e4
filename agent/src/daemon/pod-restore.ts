// An in-place VMRestore of a VM pod. The agent never starts QEMU for a pod: the pod's launcher
// restarts its own QEMU with -incoming defer, then the agent loads the snapshot into it over the
// checked QMP connection (the engine's attach restore) and resumes it or leaves it paused.
// restoreMode Lazy: the agent opens the snapshot read-only and passes the fd with the launcher's
// restart-incoming (SCM_RIGHTS); that QEMU maps its main RAM from it, and the agent loads only the
// companion stream (device state, small blocks), as for the VMs it launches itself.
// Writable disks: the launcher starts QEMU on the snapshot's frozen layers and that QEMU puts them
// under fresh overlays before the load (vm/pod-disks.ts); the agent opens none of those files.
// decidePodRestore is the pure part; runPodRestore gathers the facts and carries the plan out.
import { Reason, Verify, restoreVerify, type VMRestore } from '../../../api/index.js';
import { restoreVm, lazyResidency, eagerArgv } from '../engine/index.js';
import { verifySnapshotFile, type VerifiedSnapshot } from '../snapshot-file/verify.js';
import type { HeaderTrust } from '../snapshot-file/header.js';
import type { DiscoveredVm } from './discovery.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';
import { LAUNCHER_RESTART_TIMEOUT_MS, type PodVms } from '../vm/pod-vms.js';
import { VM_LABEL } from '../../../api/vm-pod.js';
import { cancellationOf } from './cancellation.js';
import type { Completion } from './completion.js';
import { useFile, type AgentContext } from './context.js';
import { RestoreRefused, failureReason, loadBound, restoreFailed, restoreSucceeded, snapshotFileFor } from './restore-runner.js';
import { restoreSettings } from './settings.js';
import { restoreSummary } from './status.js';
import { openSnapshotForPod } from './pod-lazy.js';
import { LAZY_SNAPSHOT_FD } from '../../launcher/argv.js';
import type { LazyMapping } from '../../../api/vm-pod.js';
import fs from 'node:fs';
import { diskSwaps, podDiskRefusal, startOnRestoreOverlays } from '../vm/pod-disks.js';
import { traceStep } from '../clock.js';

/** What QMP of the target pod showed before anything was touched. */
export type PodQmpState =
  | { kind: 'absent' }
  | { kind: 'unreachable'; message: string }
  | { kind: 'answers'; status: string; migration?: string };

export interface PodRestoreFacts {
  namespace: string;
  sourceVMName: string;
  targetVMName: string;
  replaceRunning: boolean;
  /** From the snapshot file's header: the VM it says it holds and the disks it froze. */
  header: { namespace?: string; name?: string; disks: string[] };
  /** Why the frozen disks cannot be restored into this pod (podDiskRefusal), if they cannot. */
  diskRefusal?: string;
  /** undefined: no Running VM pod with that name on this node. */
  qmp: PodQmpState | undefined;
  nodeName: string;
  /** The pod the operator made for this restore (VMRestore status.pod), and the uid of the VM pod found. */
  madePod?: { name: string; uid: string };
  foundPodUid?: string;
}

export type PodRestorePlan =
  | { action: 'refuse'; reason: Reason; message: string }
  | { action: 'restore'; restartIncoming: boolean; replacing: boolean };

const LOADING = ['setup', 'active', 'device', 'cancelling'];

export function decidePodRestore(f: PodRestoreFacts): PodRestorePlan {
  const target = `${f.namespace}/${f.targetVMName}`;
  const refuse = (reason: Reason, message: string): PodRestorePlan => ({ action: 'refuse', reason, message });
  // A copy runs only in the pod the operator made for it from the source pod's recorded spec.
  if (f.targetVMName !== f.sourceVMName && !f.madePod) {
    return refuse(
      Reason.Failed,
      `spec.targetVMName ${f.targetVMName} is not the snapshot's VM ${f.sourceVMName}, and the operator made no pod for this copy ` +
        `(the VMSnapshot recorded no VM pod): restore into VM ${f.sourceVMName} itself (omit spec.targetVMName), or take a new snapshot of the VM pod`,
    );
  }
  if (f.madePod && f.qmp && f.foundPodUid !== f.madePod.uid) {
    return refuse(
      Reason.VMRunning,
      `VM ${target} runs in a pod other than ${f.madePod.name} (uid ${f.madePod.uid}), the one made for this restore: the restore goes only into that pod`,
    );
  }
  if (f.header.namespace !== f.namespace || f.header.name !== f.sourceVMName) {
    return refuse(
      Reason.Failed,
      `the snapshot file says it holds VM ${f.header.namespace ?? '?'}/${f.header.name ?? '?'}, not ${f.namespace}/${f.sourceVMName}: ` +
        'the file does not belong to this VMSnapshot; restore from another snapshot',
    );
  }
  if (f.diskRefusal) return refuse(Reason.Failed, `the snapshot's writable disks cannot be restored into VM pod ${target}: ${f.diskRefusal}`);
  if (!f.qmp && f.madePod) {
    return refuse(Reason.VMNotFound, `pod ${f.madePod.name}, made for this restore, is not a Running VM pod on node ${f.nodeName}: see its events and log`);
  }
  // A QEMU waiting for a restore runs on the pod's own images: disks need one started on the frozen layers.
  const disks = f.header.disks.length > 0;
  if (!f.qmp) {
    return refuse(
      Reason.VMNotFound,
      `VM ${target} has no Running pod labelled ${VM_LABEL}=${f.targetVMName} on node ${f.nodeName}: start the VM pod (it keeps running the launcher) and retry`,
    );
  }
  if (f.qmp.kind === 'unreachable') {
    return refuse(Reason.VMRunning, `the QEMU of VM pod ${target} cannot be reached safely: ${f.qmp.message}`);
  }
  if (f.qmp.kind === 'absent') return { action: 'restore', restartIncoming: true, replacing: false };
  if (f.qmp.status === 'inmigrate') {
    if (f.qmp.migration && LOADING.includes(f.qmp.migration)) {
      return refuse(Reason.VMRunning, `VM pod ${target} is already loading a snapshot (migration '${f.qmp.migration}'): wait for that restore to end`);
    }
    // Waiting for a restore and never loaded: nothing to lose, used as it is. Anything else there is restarted.
    const fresh = !disks && (f.qmp.migration === undefined || f.qmp.migration === 'none');
    return { action: 'restore', restartIncoming: !fresh, replacing: false };
  }
  if (!f.replaceRunning) {
    return refuse(
      Reason.VMRunning,
      `VM ${target} is running (its QEMU is '${f.qmp.status}') and spec.ifRunning is Fail: stop the VM first, or set spec.ifRunning: Replace to restart it from the snapshot`,
    );
  }
  return { action: 'restore', restartIncoming: true, replacing: true };
}

/**
 * What a VM-pod restore reads before it may touch the VM: the VMSnapshot's file, checked whole (a
 * header this agent wrote for this VMSnapshot, the stream structure unchanged: the tenant's QEMU
 * held the file during the save), and the VM pod from the API. Nothing here touches the VM, so it
 * runs beside the claim (work.ts); the file counts as in use from the moment it is known.
 */
export interface PodRestorePrep {
  file: string;
  trust: Required<HeaderTrust>;
  snapshot: VerifiedSnapshot;
  vm: DiscoveredVm | undefined;
  /** Ends the file's use (idempotent): the runner's, or the dispatcher's when the claim failed. */
  release(): void;
}

export async function preparePodRestore(ctx: AgentContext, finder: PodVms, restore: VMRestore): Promise<PodRestorePrep> {
  const ns = restore.metadata.namespace!;
  const [{ file, trust }, vm] = await Promise.all([snapshotFileFor(ctx, restore), finder.find(ns, restore.status!.effective!.targetVMName)]);
  const release = useFile(ctx, file);
  try {
    return { file, trust, snapshot: verifySnapshotFile(file, trust), vm, release };
  } catch (err) {
    release();
    throw err;
  }
}

export async function runPodRestore(
  ctx: AgentContext,
  finder: PodVms,
  restore: VMRestore,
  signal: AbortSignal,
  /** Started before the claim (work.ts); else prepared here. */
  prepared?: Promise<PodRestorePrep>,
): Promise<Completion> {
  const started = Date.now();
  const ns = restore.metadata.namespace!;
  const effective = restore.status!.effective!;
  const target = `${ns}/${effective.targetVMName}`;
  const settings = restoreSettings(effective);
  const fail = (reason: Reason, message: string) => restoreFailed(restore, reason, message);
  let releaseFile: (() => void) | undefined;
  let restarted = false;
  traceStep(`agent: restoring VM pod ${ns}/${effective.targetVMName} (${restore.metadata.name})`);
  try {
    const prep = await (prepared ?? preparePodRestore(ctx, finder, restore));
    releaseFile = prep.release;
    const { file, trust, snapshot, vm } = prep;
    const meta: SnapshotMetadata = snapshot.header.metadata;
    traceStep('agent: snapshot file checked, VM pod looked up');
    let qmp: PodQmpState | undefined;
    if (vm) {
      const probe = await finder.probe(vm, 2000);
      if (probe.kind === 'answers') {
        try {
          const [{ status }, migration] = await Promise.all([
            probe.client.execute<{ status: string }>('query-status'),
            probe.client.execute<{ status?: string }>('query-migrate'),
          ]);
          qmp = { kind: 'answers', status: String(status).slice(0, 64), ...(migration?.status ? { migration: String(migration.status).slice(0, 64) } : {}) };
        } catch (err) {
          qmp = { kind: 'unreachable', message: (err as Error).message };
        } finally {
          probe.client.close(); // QMP serves one client: the launcher's restart and the load connect anew
        }
      } else qmp = probe.kind === 'absent' ? { kind: 'absent' } : { kind: 'unreachable', message: probe.message };
    }
    const plan = decidePodRestore({
      namespace: ns,
      sourceVMName: effective.sourceVMName,
      targetVMName: effective.targetVMName,
      replaceRunning: settings.replaceRunning,
      header: { namespace: meta.vm.namespace, name: meta.vm.name, disks: (meta.disks ?? []).map((d) => String(d.device).slice(0, 64)) },
      ...(meta.disks?.length && vm ? { diskRefusal: podDiskRefusal(meta.disks, vm.pod?.writableVolumes ?? []) } : {}),
      qmp,
      nodeName: ctx.nodeName,
      ...(restore.status?.pod ? { madePod: restore.status.pod } : {}),
      ...(vm?.pod ? { foundPodUid: vm.pod.podUid } : {}),
    });
    traceStep('agent: VM pod found and probed');
    if (plan.action === 'refuse') throw new RestoreRefused(plan.reason, plan.message);
    void ctx.events.record(
      restore,
      'Normal',
      'RestoreStarted',
      `restoring VMSnapshot ${effective.snapshotName} (${file}) into VM pod ${target} (pod ${vm!.pod!.podName}) on node ${ctx.nodeName} ` +
        `(${settings.lazy ? 'Lazy' : `${settings.channels} channels, direct I/O ${effective.directIO}`}, then ${effective.afterRestore}${plan.replacing ? '; restarting the running VM' : ''})`,
    );
    if (signal.aborted) throw signal.reason;
    const downtimeFrom = plan.replacing ? Date.now() : started;
    const restartIncoming = async (lazy?: LazyMapping) => {
      restarted = true;
      let fd: number | undefined;
      if (lazy) {
        const opened = openSnapshotForPod(ctx.config.storageRoot, file);
        // Checked before the restore decided on Lazy (lazyBlocked): only a race gets here.
        if ('reason' in opened) throw new Error(opened.reason);
        fd = opened.fd;
      }
      try {
        const disks = meta.disks?.length ? { disks: diskSwaps(meta.disks) } : {};
        traceStep('agent: asking the launcher to restart QEMU');
        const reply = await finder.launcher(vm!, { op: 'restart-incoming', ...(lazy ? { lazy } : {}), ...disks }, LAUNCHER_RESTART_TIMEOUT_MS, fd);
        traceStep('agent: the launcher restarted QEMU');
        if (reply.state !== 'incoming') {
          throw new Error(`the VM pod's launcher answered restart-incoming with state '${reply.state}', not 'incoming': check the launcher's log in pod ${vm!.pod!.podName}`);
        }
      } finally {
        if (fd !== undefined) fs.closeSync(fd);
      }
      if (meta.disks?.length) {
        const client = await finder.connectQmp(vm!, 10_000);
        try {
          await startOnRestoreOverlays(client, meta.disks);
        } finally {
          client.close(); // QMP serves one client: the load connects anew
        }
      }
    };
    // Lazy: whether the pod's QEMU can reach the file through an fd (mode and directory).
    let lazyBlocked: string | undefined;
    if (settings.lazy) {
      const probe = openSnapshotForPod(ctx.config.storageRoot, file);
      if ('reason' in probe) lazyBlocked = probe.reason;
      else fs.closeSync(probe.fd);
    }
    const lazy =
      settings.lazy && !lazyBlocked
        ? {
            ...settings.lazy,
            attach: {
              // What the pod runs: its recorded command line, a lazy mapping from an earlier restore read as the plain RAM it stands for.
              argv: eagerArgv(meta.qemu.argv, (f) => f === `/proc/self/fd/${LAZY_SNAPSHOT_FD}`),
              // Lazy: always a fresh QEMU (the RAM must be the mapping); eager: as planned.
              prepare: async (mapping: LazyMapping | undefined) => {
                if (mapping || plan.restartIncoming) await restartIncoming(mapping);
              },
            },
          }
        : undefined;
    if (!lazy && plan.restartIncoming) await restartIncoming();
    const r = await restoreVm({
      inPath: file,
      qmpSocket: vm!.qmpSocket,
      connect: () => finder.connectQmp(vm!, 10_000),
      channels: settings.channels,
      directIO: settings.directIO,
      paused: settings.paused,
      verify: restoreVerify(restore) === Verify.Digests,
      trust,
      // Checked in full before a running VM is replaced (a bad file must not cost the user their VM): not again.
      verified: snapshot,
      signal,
      ...(lazy ? { lazy } : {}),
      ...loadBound(ctx, restore),
    });
    traceStep('agent: restored');
    const { status, outcome } = await restoreSucceeded(ctx, restore, r, {
      file,
      target,
      started,
      downtimeFrom,
      lazyFallbackReason: lazyBlocked,
      // The restored QEMU is the peer of the load's checked QMP connection: no second lookup.
      residency: (lazyFile) => (r.qemuPid ? lazyResidency(r.qemuPid, lazyFile) : undefined),
    });
    return {
      status,
      event: { type: 'Normal', reason: 'RestoreSucceeded', message: `${restoreSummary(outcome)}; QEMU restarted by the launcher of pod ${vm!.pod!.podName}` },
    };
  } catch (err) {
    const left = restarted ? "; the VM pod's QEMU waits for a restore (-incoming defer): create a new VMRestore to load a snapshot into it" : '';
    const cancelled = cancellationOf(signal);
    if (cancelled) return fail(cancelled.reason, `${cancelled.message}; the restore was cancelled${left}`);
    if (err instanceof RestoreRefused) return fail(err.reason, err.message);
    return fail(failureReason(err), `the restore into VM pod ${target} failed: ${(err as Error).message}${left}`);
  } finally {
    releaseFile?.();
  }
}
