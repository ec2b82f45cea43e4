// VMSnapshot: observed state in, decision out. No I/O here.
import {
  DEFAULT_FAILURE_DEADLINE,
  Phase,
  Reason,
  SNAPSHOT_FINALIZER,
  VM_LABEL,
  effectiveDeletionPolicy,
  formatBytes,
  inventoryVmIsUp,
  parseDurationMs,
  resolveSnapshotSpec,
  snapshotObjectPrefix,
  type Repository,
  type VMSnapshot,
} from '../api/index.js';
import { isTerminal } from '../api/protocol.js';
import { assign, deadlineExceeded, fail, nothing, wait, type Decision } from './decision.js';
import { DEFAULT_NODE_LOSS_GRACE_SECONDS, nodeState } from './node-loss.js';
import { recordVmPod } from './vm-pod-record.js';
import { inventoriesFreshSince, inventoryUpdatedAt, liveInventories, locateVM, objectKey, operationHoldingVM, timeOf, vmKey, type World } from './world.js';

const WAIT_POLL_MS = 2_000;
/** How often a hibernation snapshot looks for its VM running again (inventory changes also wake it). */
const HIBERNATION_POLL_MS = 30_000;

export interface SnapshotReconcileOptions {
  /** How long a snapshot's node may be silent before its deletion no longer waits for it. */
  nodeLossGraceMs: number;
}

export function reconcileSnapshot(
  snap: VMSnapshot,
  world: World,
  now: Date,
  opts: SnapshotReconcileOptions = { nodeLossGraceMs: DEFAULT_NODE_LOSS_GRACE_SECONDS * 1000 },
): Decision {
  const finalizers = snap.metadata.finalizers ?? [];
  if (snap.metadata.deletionTimestamp) return onDeletion(snap, world, now, opts);
  // The finalizer, and the VM label (`kubectl get vmss -l vmsnap.io/vm=<vm>`; a wrong one is corrected: vmName is immutable).
  const labelled = snap.metadata.labels?.[VM_LABEL] === snap.spec.vmName;
  if (!finalizers.includes(SNAPSHOT_FINALIZER) || !labelled) {
    const metadata: Record<string, unknown> = labelled ? {} : { labels: { [VM_LABEL]: snap.spec.vmName } };
    if (!finalizers.includes(SNAPSHOT_FINALIZER)) metadata.finalizers = [...finalizers, SNAPSHOT_FINALIZER];
    return { metadata, events: [], requeueAfterMs: 0 };
  }
  const phase = snap.status?.phase;
  if (isTerminal(phase)) return hibernationOver(snap, world, now);

  const deadline = snap.status?.effective?.failureDeadline ?? snap.spec.failureDeadline ?? DEFAULT_FAILURE_DEADLINE;
  const startedAt = timeOf(snap.status?.startTime) || timeOf(snap.metadata.creationTimestamp);
  const remaining = startedAt + parseDurationMs(deadline) - now.getTime();
  if (remaining <= 0) return deadlineExceeded(snap, 'save', deadline, now);
  if (phase === Phase.InProgress || snap.status?.nodeName) return nothing(remaining);
  return schedule(snap, world, now, remaining);
}

/** Picks the class and the node, waits for the VM to be free, then hands the save to that node's agent. */
function schedule(snap: VMSnapshot, world: World, now: Date, remaining: number): Decision {
  const ns = snap.metadata.namespace!;
  const vm = snap.spec.vmName;
  const poll = Math.min(WAIT_POLL_MS, remaining);
  const until = `retrying until spec.failureDeadline (${snap.spec.failureDeadline ?? DEFAULT_FAILURE_DEADLINE})`;
  // A class or VM applied together with the snapshot (GitOps) may come later: wait for it, as CSI does.
  const resolved = resolveSnapshotSpec(snap.spec, world.classes);
  if (!resolved.ok) return wait(snap, Reason.ClassNotFound, `${resolved.error}; ${until}`, now, poll, 'Warning');

  const where = locateVM(world, ns, vm, now.getTime());
  if (where.length === 0) {
    if (!inventoriesFreshSince(world, timeOf(snap.metadata.creationTimestamp), now.getTime())) {
      return wait(snap, Reason.WaitingForInventory, `waiting for the node agents to report their VMs before looking up VM "${vm}"`, now, poll);
    }
    const nodes = liveInventories(world, now.getTime()).map((i) => i.metadata.name).join(', ') || 'none';
    return wait(snap, Reason.VMNotFound, `VM "${vm}" not found in namespace "${ns}": no node agent reports it (agents on: ${nodes}); ${until}`, now, poll, 'Warning');
  }
  if (where.length > 1) {
    return fail(snap, 'InvalidSpec', `VM "${vm}" of namespace "${ns}" is reported by several nodes (${where.map((w) => w.node).join(', ')}); refusing to guess`, now);
  }
  const holder = operationHoldingVM(world, ns, vm, objectKey('VMSnapshot', ns, snap.metadata.name));
  if (holder) return wait(snap, Reason.WaitingForVM, `waiting for ${holder} to finish: one operation per VM at a time`, now, poll);

  const { node, vm: found } = where[0]!;
  const e = resolved.effective;
  const message = `saving VM "${vm}" on node ${node} (${resolved.reason}; ${e.channels} channels, directIO ${e.directIO}, ${e.captureMode}, then ${e.afterSnapshot})`;
  const extra: Record<string, unknown> = { effective: e };
  if (found.memoryBytes) {
    extra.restoreSize = found.memoryBytes;
    extra.restoreSizeHuman = formatBytes(found.memoryBytes);
  }
  if (found.qemuVersion || found.machine) extra.qemu = { version: found.qemuVersion, machine: found.machine };
  const vmPod = vmPodRecord(world, ns, vm, node);
  if (vmPod) extra.vmPod = vmPod;
  return { ...assign(snap, node, vmKey(ns, vm), message, now, extra), requeueAfterMs: remaining };
}

/**
 * A hibernation snapshot (status.hibernated, set by the agent when afterSnapshot Stop succeeded)
 * holds the VM's only state until the VM runs again: a restore, or a fresh start. The inventory
 * that says so must postdate the save, or it could describe the VM before it was stopped.
 */
export function hibernationOver(snap: VMSnapshot, world: World, now: Date): Decision {
  if (snap.status?.hibernated !== true) return nothing();
  const ns = snap.metadata.namespace!;
  const vm = snap.spec.vmName;
  const savedAt = timeOf(snap.status.completionTime);
  const woken = world.restores.find(
    (r) =>
      r.metadata.namespace === ns && r.status?.phase === Phase.Succeeded && r.status.effective?.targetVMName === vm && timeOf(r.status.completionTime) > savedAt,
  );
  const up = locateVM(world, ns, vm, now.getTime()).find((l) => inventoryVmIsUp(l.vm.state) && inventoryUpdatedAt(world, l.node) > savedAt);
  if (!woken && !up) return nothing(HIBERNATION_POLL_MS);
  const how = woken ? `restored by VMRestore "${woken.metadata.name}"` : `reported running on node ${up!.node}`;
  const message = `VM "${vm}" runs again (${how}): this snapshot no longer holds its only state`;
  return { status: { hibernated: false }, events: [{ type: 'Normal', reason: 'VMRunningAgain', message }] };
}

/**
 * The pod the node's agent will save, recorded so that a copy or a wake can run in a new pod made
 * from it: the one Running pod of the namespace labelled for the VM on that node (the agent refuses
 * a VM claimed by two). Absent for VMs that are not pods, or a spec too large to record.
 */
function vmPodRecord(world: World, ns: string, vm: string, node: string) {
  const pods = world.pods.filter(
    (p) => p.metadata.namespace === ns && p.metadata.labels?.[VM_LABEL] === vm && p.spec?.nodeName === node && !p.metadata.deletionTimestamp && p.status?.phase === 'Running' /* the Pod's phase */,
  );
  if (pods.length !== 1) return undefined;
  const r = recordVmPod(pods[0]!);
  return r.ok ? r.record : undefined;
}

/**
 * The finalizer goes once nothing remains to clean up: a running save is cancelled by its agent, a
 * Delete-policy file removed by it, then the snapshot's copy in its repository (the controller
 * removes it before releasing); a file under Retain, or no file at all, needs nothing. A node lost
 * for longer than the grace period no longer blocks: released with a NodeLost event.
 */
function onDeletion(snap: VMSnapshot, world: World, now: Date, opts: SnapshotReconcileOptions): Decision {
  const finalizers = snap.metadata.finalizers ?? [];
  if (!finalizers.includes(SNAPSHOT_FINALIZER)) return nothing();
  const phase = snap.status?.phase;
  const release = (message: string, lost = false): Decision => ({
    metadata: { finalizers: finalizers.filter((f) => f !== SNAPSHOT_FINALIZER) },
    events: [{ type: lost ? 'Warning' : 'Normal', reason: lost ? 'NodeLost' : 'Released', message }],
  });
  const node = snap.status?.nodeName;
  const state = node ? nodeState(world, node, now.getTime(), opts.nodeLossGraceMs, timeOf(snap.metadata.deletionTimestamp)) : undefined;
  const retain = effectiveDeletionPolicy(snap) === 'Retain';
  const remote = retain ? undefined : remoteCopy(snap);
  const waitForNode = () => nothing(Math.min(WAIT_POLL_MS, state?.kind === 'present' ? state.lostInMs : WAIT_POLL_MS));
  const withRemote = (d: Decision): Decision => (remote ? { ...d, remoteDelete: remote } : d);
  const copy = remote ? `its copy in bucket ${remote.repository.bucket} at ${remote.prefix}` : '';
  const lost = (why: string): Decision => {
    const file = snap.status?.fileDeleted ? 'its file was already removed' : `${snap.status?.file?.path ?? 'its file'} is left on that node`;
    return withRemote(release(`${why}: released; ${file}${copy ? `; removed ${copy}` : ''}`, true));
  };
  if (phase === Phase.InProgress) return state?.kind === 'lost' ? lost(state.message) : waitForNode(); // its agent cancels it and marks it Failed
  if (phase !== Phase.Succeeded) return release('no snapshot file to keep or remove');
  if (retain) return release(`deletionPolicy Retain: kept ${snap.status?.file?.path ?? 'the file'} on node ${node}`);
  if (state?.kind === 'lost') return lost(state.message);
  if (!snap.status?.fileDeleted) return waitForNode(); // waiting for the node's agent to remove the file
  if (snap.status.upload?.phase === 'Uploading') return waitForNode(); // its agent is cancelling the upload
  return withRemote(release(`removed ${snap.status?.file?.path ?? 'the file'} from node ${node}${copy ? ` and ${copy}` : ''}`));
}

/** The snapshot's copy in its class's repository, when an upload was started. */
function remoteCopy(snap: VMSnapshot): { repository: Repository; prefix: string } | undefined {
  const repository = snap.status?.effective?.repository;
  const upload = snap.status?.upload;
  if (!repository || !upload) return undefined;
  const prefix = upload.prefix ?? snapshotObjectPrefix(repository, { namespace: snap.metadata.namespace!, name: snap.metadata.name!, uid: snap.metadata.uid! });
  return { repository, prefix };
}
