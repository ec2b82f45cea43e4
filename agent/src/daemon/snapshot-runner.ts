// Runs one claimed VMSnapshot: the engine's save of the VM named by the
// snapshot, in the snapshot's own namespace, into a file the agent names.
import fs from 'node:fs';
import path from 'node:path';
import { Digests, MAX_PROGRESS_UPDATES_PER_SECOND, Reason, snapshotDigests, type VMSnapshot, type VMSnapshotStatus } from '../../../api/index.js';
import { saveVm, OverlayLedger } from '../engine/index.js';
import { reasonOf } from '../errors.js';
import type { QmpClient } from '../qmp/client.js';
import { isPodVms } from '../vm/pod-vms.js';
import type { DiscoveredVm } from './discovery.js';
import { cancellationOf, type Cancellation } from './cancellation.js';
import type { Completion } from './completion.js';
import type { AgentContext } from './context.js';
import { snapshotFilePath } from './paths.js';
import { saveSettings } from './settings.js';
import { failedStatus, progressStatus, saveSummary, snapshotSucceededStatus } from './status.js';
import { Throttle } from './throttle.js';
import { snapshotFileMode } from './pod-lazy.js';
import { headerTrust } from './header-trust.js';
import { podDiskFreezer } from '../vm/pod-disks.js';

export function snapshotClaimExtra(ctx: AgentContext, snap: VMSnapshot): Partial<VMSnapshotStatus> {
  return { file: { path: snapshotFilePath(ctx.config.storageRoot, snap) } };
}

export async function runSnapshot(ctx: AgentContext, snap: VMSnapshot, signal: AbortSignal): Promise<Completion> {
  const ns = snap.metadata.namespace!;
  const vmName = snap.spec.vmName;
  const effective = snap.status!.effective!;
  const settings = saveSettings(effective);
  const ref = { namespace: ns, name: snap.metadata.name! };
  const fail = (reason: Reason, message: string): Completion => ({
    status: failedStatus(snap, reason, message, new Date()),
    event: { type: 'Warning', reason: 'SaveFailed', message },
  });

  let file: string;
  try {
    file = snapshotFilePath(ctx.config.storageRoot, snap);
  } catch (err) {
    return fail(Reason.Failed, (err as Error).message);
  }
  const vm = await ctx.discovery.find(ns, vmName);
  if (!vm) {
    return fail(
      Reason.VMNotFound,
      `VM ${ns}/${vmName} was not found on node ${ctx.nodeName} (${ctx.discovery.describeSearch(ns, vmName)}): ` +
        'is the VM running on this node?',
    );
  }
  let connect: (() => Promise<QmpClient>) | undefined;
  if (vm.pod) {
    // A VM pod's QMP only through the checked connection; its disks are frozen by its own QEMU (vm/pod-disks.ts).
    const checked = await podSaveConnection(ctx, vm);
    if (typeof checked === 'string') return fail(Reason.Failed, checked);
    connect = async () => checked;
  }
  void ctx.events.record(
    snap,
    'Normal',
    'SaveStarted',
    `saving VM ${ns}/${vmName} to ${file} on node ${ctx.nodeName} (${settings.channels} channels, direct I/O ${effective.directIO}, ` +
      `${effective.captureMode} capture, then ${effective.afterSnapshot})`,
  );

  const progress = new Throttle<ReturnType<typeof progressStatus>>(
    (p) => ctx.kube.patchStatus('vmSnapshot', ref, { status: p }).then(() => undefined),
    MAX_PROGRESS_UPDATES_PER_SECOND,
    {
      equal: (a, b) => a.progress.percent === b.progress.percent && a.progress.bytesTotal === b.progress.bytesTotal,
      onError: (err) => ctx.log.debug({ err: String(err), ...ref }, 'progress patch failed'),
    },
  );
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const r = await saveVm({
      qmpSocket: vm.qmpSocket,
      ...(connect ? { connect, diskFreezer: podDiskFreezer(vm.pod?.writableVolumes ?? []) } : {}),
      outPath: file,
      fileMode: snapshotFileMode(ctx.config.storageRoot, file),
      ...settings,
      vm: { namespace: ns, name: vmName },
      trust: headerTrust(ctx.config.storageRoot, snap),
      ledger: OverlayLedger.forStorageRoot(ctx.config.storageRoot),
      digest: snapshotDigests(snap) === Digests.Record,
      onProgress: (p) => progress.push(progressStatus(p.bytesDone, p.bytesTotal)),
      stallMs: ctx.config.stallTimeoutSeconds * 1000,
      onStalled: (err) => ctx.log.warn({ ...ref, message: err.message }, 'the save stalled; putting the VM back'),
      signal,
    });
    await progress.stop();
    const digestsFailed = r.digests && 'error' in r.digests ? `; ${r.digests.error} (spec.digests)` : '';
    const stopped = (settings.after === 'stop' ? '; the VM was stopped (afterSnapshot: Stop)' : '') + digestsFailed;
    const disks = r.disks.length > 0 ? `; disks frozen with the RAM: ${r.disks.map((d) => `${d.device} (${d.base})`).join(', ')}` : '';
    return {
      status: snapshotSucceededStatus(snap, r, new Date(), stopped) as Record<string, unknown>,
      event: { type: 'Normal', reason: 'SaveSucceeded', message: saveSummary(r) + stopped + disks },
    };
  } catch (err) {
    await progress.stop();
    const cancelled = cancellationOf(signal);
    if (cancelled) return cancelledCompletion(snap, cancelled);
    if (reasonOf(err) === Reason.MigrationStalled) {
      return fail(Reason.MigrationStalled, `${(err as Error).message}; the save of VM ${ns}/${vmName} was ended, the VM put back as it was and the partial file removed (agent setting stallTimeoutSeconds)`);
    }
    return fail(Reason.Failed, `the save of VM ${ns}/${vmName} failed: ${(err as Error).message}`);
  }
}

/** The QMP connection for saving a VM pod (opened beneath its volume, peer checked), or why the save is refused. */
async function podSaveConnection(ctx: AgentContext, vm: DiscoveredVm): Promise<QmpClient | string> {
  const where = `VM ${vm.namespace}/${vm.name} (pod ${vm.pod!.podName})`;
  if (!isPodVms(ctx.discovery)) return `${where} is a pod but the agent does not find VMs as pods`;
  try {
    return await ctx.discovery.connectQmp(vm);
  } catch (err) {
    return `cannot reach the QMP of ${where}: ${(err as Error).message}`;
  }
}

function cancelledCompletion(snap: VMSnapshot, c: Cancellation): Completion {
  const cleanup = 'the save was cancelled: the VM is back in the state it had before the save and the partial file was removed';
  const now = new Date();
  switch (c.kind) {
    case 'deleted':
      return {
        // No file remains: the operator may drop its finalizer on either field.
        status: { ...failedStatus(snap, c.reason, `${c.message}; ${cleanup}`, now), fileDeleted: true },
        event: { type: 'Warning', reason: 'SaveFailed', message: `${c.message}; ${cleanup}` },
      };
    case 'failed':
      return {
        status: failedStatus(snap, c.reason, `${c.message}; ${cleanup}`, now),
        event: { type: 'Warning', reason: 'SaveFailed', message: `${c.message}; ${cleanup}` },
      };
    case 'shutdown':
      return {
        status: failedStatus(snap, c.reason, `${c.message}; ${cleanup}; create a new VMSnapshot to retry`, now),
        event: { type: 'Warning', reason: 'SaveFailed', message: `${c.message}; ${cleanup}` },
      };
  }
}
