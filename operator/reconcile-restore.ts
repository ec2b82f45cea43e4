// VMRestore: observed state in, decision out. No I/O here.
import { DEFAULT_FAILURE_DEADLINE, Phase, Reason, VM_LABEL, effectiveRestoreSpec, inventoryVmIsUp, parseDurationMs, type VMRestore } from '../api/index.js';
import { isTerminal } from '../api/protocol.js';
import { assign, deadlineExceeded, fail, nothing, phasePatch, wait, type Decision } from './decision.js';
import { remoteRestoreCheck, whereVMRuns } from './remote-restore.js';
import { decideRestorePod } from './restore-pod.js';
import { restoreSource } from './restore-source.js';
import { ownedBy } from './vm-pod-record.js';
import { inventoryUpdatedAt, lastFinishedOn, locateVM, objectKey, operationHoldingVM, timeOf, vmKey, type World } from './world.js';

const WAIT_POLL_MS = 2_000;

export function reconcileRestore(restore: VMRestore, world: World, now: Date): Decision {
  if (restore.metadata.deletionTimestamp) return nothing(); // the pod it made, if any, goes with it (owner reference)
  const phase = restore.status?.phase;
  if (isTerminal(phase)) return settleRestorePod(restore, world);
  const deadline = restore.status?.effective?.failureDeadline ?? restore.spec.failureDeadline ?? DEFAULT_FAILURE_DEADLINE;
  const startedAt = timeOf(restore.status?.startTime) || timeOf(restore.metadata.creationTimestamp);
  const remaining = startedAt + parseDurationMs(deadline) - now.getTime();
  if (remaining <= 0) return deadlineExceeded(restore, 'restore', deadline, now);
  if (phase === Phase.InProgress || restore.status?.nodeName) return nothing(remaining);

  const ns = restore.metadata.namespace!;
  const source = restoreSource(restore, world.snapshots);
  if (source.kind === 'none') {
    return wait(restore, 'SnapshotNotFound', `waiting for a Succeeded VMSnapshot of VM "${source.vmName}" (spec.latestSnapshotOf) in namespace "${ns}"`, now, Math.min(WAIT_POLL_MS, remaining));
  }
  if (source.kind === 'choose') return chose(source.name, source.vmName);
  const snapshotName = source.name;
  const snapshot = world.snapshots.find((s) => s.metadata.namespace === ns && s.metadata.name === snapshotName);
  if (!snapshot) {
    return wait(restore, 'SnapshotNotFound', `waiting for VMSnapshot "${snapshotName}" (${source.field}) to exist in namespace "${ns}"`, now, Math.min(WAIT_POLL_MS, remaining));
  }
  if (snapshot.metadata.deletionTimestamp) return fail(restore, 'SnapshotNotFound', `VMSnapshot "${snapshotName}" is being deleted`, now);
  if (snapshot.status?.phase === Phase.Failed) {
    return fail(restore, 'SnapshotFailed', `VMSnapshot "${snapshotName}" failed: ${snapshot.status.error?.message ?? 'no reason recorded'}`, now);
  }
  if (snapshot.status?.phase !== Phase.Succeeded || !snapshot.status.readyToUse || !snapshot.status.nodeName) {
    return wait(restore, 'WaitingForSnapshot', `waiting for VMSnapshot "${snapshotName}" to be ready to use`, now, Math.min(WAIT_POLL_MS, remaining));
  }

  const effective = effectiveRestoreSpec(restore.spec, snapshot);
  const target = effective.targetVMName;
  const remote = remoteRestoreCheck(restore, snapshot, { name: target, where: whereVMRuns(world, ns, target, now.getTime()) });
  if (remote.kind === 'fail') return fail(restore, 'SnapshotNotFound', remote.message, now);
  if (remote.kind === 'wait') return wait(restore, remote.reason, remote.message, now, Math.min(WAIT_POLL_MS, remaining));
  const node = remote.node;
  const poll = Math.min(WAIT_POLL_MS, remaining);
  const holder = operationHoldingVM(world, ns, target, objectKey('VMRestore', ns, restore.metadata.name));

  // A VM pod's snapshot: a copy, or a wake whose pod is gone, runs in a new pod made from the recorded spec.
  const record = snapshot.status.vmPod;
  if (record) {
    if (holder) return wait(restore, 'WaitingForVM', `waiting for ${holder} to finish: one operation per VM at a time`, now, poll);
    const inv = locateVM(world, ns, target, now.getTime()).find((l) => l.node === node);
    const step = decideRestorePod({
      namespace: ns,
      restore: { name: restore.metadata.name!, uid: restore.metadata.uid ?? '' },
      snapshotName,
      sourceVMName: effective.sourceVMName,
      targetVMName: target,
      copy: effective.copy,
      node,
      record,
      disks: snapshot.status.disks ?? [],
      pods: world.pods,
      inventory: { state: inv?.vm.state, updatedAt: inventoryUpdatedAt(world, node) },
      now: now.getTime(),
    });
    switch (step.kind) {
      case 'fail':
        return { ...fail(restore, step.reason, step.message, now), ...(step.deletePod ? { pod: { delete: { namespace: ns, ...step.deletePod } } } : {}) };
      case 'wait':
        return wait(restore, 'WaitingForPod', step.message, now, Math.min(1_000, remaining));
      case 'create': {
        const message = `creating pod ${target} on node ${node} from the pod recorded by VMSnapshot "${snapshotName}" (${record.name}) for ${effective.copy ? `a copy of VM "${effective.sourceVMName}"` : `VM "${target}"`}`;
        return {
          status: phasePatch(restore, Phase.Pending, Reason.CreatingPod, message, now, { startTime: restore.status?.startTime ?? now.toISOString() }),
          events: [{ type: 'Normal', reason: 'CreatingPod', message }],
          pod: { create: step.pod },
          requeueAfterMs: Math.min(1_000, remaining),
        };
      }
      case 'ready': {
        const message = `restoring ${effective.copy ? `a copy "${target}" of VM "${effective.sourceVMName}"` : `VM "${target}"`} from VMSnapshot "${snapshotName}" into the new pod ${step.pod.name} (${effective.channels} channels, directIO ${effective.directIO}, ${effective.restoreMode}) ${remote.where}`;
        return { ...assign(restore, node, vmKey(ns, target), message, now, { effective, restoreSize: snapshot.status.restoreSize, pod: step.pod }), requeueAfterMs: remaining };
      }
      case 'inPlace':
        if (replacesPodInPlace(world, ns, target, node, effective.ifRunning)) {
          const message = `restoring VM "${target}" from VMSnapshot "${snapshotName}" into its VM pod (${effective.channels} channels, directIO ${effective.directIO}, ${effective.restoreMode}, replacing its QEMU if one runs) ${remote.where}`;
          return { ...assign(restore, node, vmKey(ns, target), message, now, { effective, restoreSize: snapshot.status.restoreSize }), requeueAfterMs: remaining };
        }
        break;
    }
  }
  // Whether the target runs is read from the inventory: it must postdate the last operation on
  // that VM (a hibernating save has just ended its QEMU; the next inventory says so).
  if (inventoryUpdatedAt(world, node) < lastFinishedOn(world, ns, target)) {
    return wait(restore, 'WaitingForInventory', `waiting for node ${node} to report the state of VM "${target}" after its last operation`, now, Math.min(500, remaining));
  }
  const running = locateVM(world, ns, target, now.getTime()).find((l) => inventoryVmIsUp(l.vm.state));
  if (running && effective.ifRunning === 'Fail') {
    return fail(
      restore,
      'VMRunning',
      `VM "${target}" is ${running.vm.state} on node ${running.node}; set spec.ifRunning: Replace to stop it and restore over it, or restore a copy with spec.targetVMName`,
      now,
    );
  }
  if (running && running.node !== node) {
    return fail(restore, 'VMRunning', `VM "${target}" runs on node ${running.node} but the restore would run ${remote.where}`, now);
  }
  if (holder) return wait(restore, 'WaitingForVM', `waiting for ${holder} to finish: one operation per VM at a time`, now, poll);

  const what = effective.copy ? `a copy "${target}" of VM "${effective.sourceVMName}"` : `VM "${target}"`;
  const message = `restoring ${what} from VMSnapshot "${snapshotName}" (${effective.channels} channels, directIO ${effective.directIO}, ${effective.restoreMode}${running ? ', replacing the running VM' : ''}) ${remote.where}`;
  return {
    ...assign(restore, node, vmKey(ns, target), message, now, { effective, restoreSize: snapshot.status.restoreSize }),
    requeueAfterMs: remaining,
  };
}

/**
 * An in-place restore into the VM's own pod with ifRunning Replace: whether its QEMU runs changes
 * nothing (it is replaced either way; the agent probes it before touching it) and the Pod objects
 * say where the VM is, so the restore need not wait for an inventory newer than the VM's last
 * operation. Only when every live pod of the VM is bound to the restore's node; else the inventory decides.
 */
export function replacesPodInPlace(world: Pick<World, 'pods'>, namespace: string, target: string, node: string, ifRunning: string): boolean {
  if (ifRunning !== 'Replace') return false;
  const pods = world.pods.filter((p) => p.metadata.namespace === namespace && p.metadata.labels?.[VM_LABEL] === target && !p.metadata.deletionTimestamp);
  return pods.length > 0 && pods.every((p) => p.spec?.nodeName === node);
}

/**
 * A finished restore's pod: a failed one's is deleted (the VM never ran in it); a succeeded one's
 * loses its owner reference, so the VM outlives the VMRestore object as any pod of the user's.
 */
function settleRestorePod(restore: VMRestore, world: World): Decision {
  const uid = restore.metadata.uid;
  const pod = world.pods.find((p) => p.metadata.namespace === restore.metadata.namespace && ownedBy(p, uid));
  if (!pod) return nothing();
  const ref = { namespace: restore.metadata.namespace!, name: pod.metadata.name! };
  if (restore.status?.phase === Phase.Failed) {
    if (pod.metadata.deletionTimestamp) return nothing();
    return { events: [{ type: 'Normal', reason: 'PodDeleted', message: `deleted pod ${ref.name}, made for this restore, which failed` }], pod: { delete: { ...ref, uid: pod.metadata.uid! } } };
  }
  return {
    events: [{ type: 'Normal', reason: 'PodReleased', message: `pod ${ref.name} now runs VM ${restore.status?.effective?.targetVMName ?? ref.name} on its own: deleting this VMRestore leaves it running` }],
    pod: { release: { ...ref, resourceVersion: pod.metadata.resourceVersion, ownerReferences: (pod.metadata.ownerReferences ?? []).filter((o) => o.uid !== uid) } },
  };
}

/** spec.latestSnapshotOf resolved: recorded once (guarded by resourceVersion), then restored like a named snapshot. */
function chose(snapshotName: string, vmName: string): Decision {
  return {
    status: { snapshotName },
    events: [{ type: 'Normal', reason: 'SnapshotChosen', message: `restoring VMSnapshot "${snapshotName}", the newest Succeeded snapshot of VM "${vmName}" (spec.latestSnapshotOf)` }],
    requeueAfterMs: 0,
  };
}
