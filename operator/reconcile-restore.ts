// VMRestore: observed state in, decision out. No I/O here.
import { DEFAULT_FAILURE_DEADLINE, effectiveRestoreSpec, inventoryVmIsUp, parseDurationMs, type VMRestore } from '../api/index.js';
import { isTerminal } from '../api/protocol.js';
import { assign, fail, nothing, wait, type Decision } from './decision.js';
import { remoteRestoreCheck } from './remote-restore.js';
import { inventoryUpdatedAt, lastFinishedOn, locateVM, objectKey, operationHoldingVM, timeOf, vmKey, type World } from './world.js';

const WAIT_POLL_MS = 2_000;
/** VMRestore has no failureDeadline field: the same default as VMSnapshot. */
const RESTORE_DEADLINE_MS = parseDurationMs(DEFAULT_FAILURE_DEADLINE);

export function reconcileRestore(restore: VMRestore, world: World, now: Date): Decision {
  if (restore.metadata.deletionTimestamp) return nothing();
  const phase = restore.status?.phase;
  if (isTerminal(phase)) return nothing();
  const startedAt = timeOf(restore.status?.startTime) || timeOf(restore.metadata.creationTimestamp);
  const remaining = startedAt + RESTORE_DEADLINE_MS - now.getTime();
  if (remaining <= 0) return fail(restore, 'DeadlineExceeded', `the restore did not finish within ${DEFAULT_FAILURE_DEADLINE}`, now);
  if (phase === 'InProgress' || restore.status?.nodeName) return nothing(remaining);

  const ns = restore.metadata.namespace!;
  const snapshotName = restore.spec.snapshotName;
  const snapshot = world.snapshots.find((s) => s.metadata.namespace === ns && s.metadata.name === snapshotName);
  if (!snapshot) {
    return wait(restore, 'SnapshotNotFound', `waiting for VMSnapshot "${snapshotName}" (spec.snapshotName) to exist in namespace "${ns}"`, now, Math.min(WAIT_POLL_MS, remaining));
  }
  if (snapshot.metadata.deletionTimestamp) return fail(restore, 'SnapshotNotFound', `VMSnapshot "${snapshotName}" is being deleted`, now);
  if (snapshot.status?.phase === 'Failed') {
    return fail(restore, 'SnapshotFailed', `VMSnapshot "${snapshotName}" failed: ${snapshot.status.error?.message ?? 'no reason recorded'}`, now);
  }
  if (snapshot.status?.phase !== 'Succeeded' || !snapshot.status.readyToUse || !snapshot.status.nodeName) {
    return wait(restore, 'WaitingForSnapshot', `waiting for VMSnapshot "${snapshotName}" to be ready to use`, now, Math.min(WAIT_POLL_MS, remaining));
  }

  const effective = effectiveRestoreSpec(restore.spec, snapshot);
  const remote = remoteRestoreCheck(restore, snapshot);
  if (remote.kind === 'fail') return fail(restore, 'SnapshotNotFound', remote.message, now);
  if (remote.kind === 'wait') return wait(restore, 'WaitingForSnapshot', remote.message, now, Math.min(WAIT_POLL_MS, remaining));
  const node = remote.node;
  const target = effective.targetVMName;
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
    return fail(restore, 'VMRunning', `VM "${target}" runs on node ${running.node} but the snapshot's file is on node ${node}`, now);
  }
  const holder = operationHoldingVM(world, ns, target, objectKey('VMRestore', ns, restore.metadata.name));
  if (holder) return wait(restore, 'WaitingForVM', `waiting for ${holder} to finish: one operation per VM at a time`, now, Math.min(WAIT_POLL_MS, remaining));

  const what = effective.copy ? `a copy "${target}" of VM "${effective.sourceVMName}"` : `VM "${target}"`;
  const message = `restoring ${what} from VMSnapshot "${snapshotName}" on node ${node} (${effective.channels} channels, directIO ${effective.directIO}, ${effective.restoreMode}${running ? ', replacing the running VM' : ''})`;
  return {
    ...assign(restore, node, vmKey(ns, target), message, now, { effective, restoreSize: snapshot.status.restoreSize }),
    requeueAfterMs: remaining,
  };
}
