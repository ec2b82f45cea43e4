// Where a VMRestore runs: spec.nodeName when set; else the node where its target VM is (its live
// VM pods, or the node whose inventory has it up); else the snapshot's node. A node other than the
// snapshot's fetches it from its class's repository, so the snapshot must be uploaded first.
import { UploadPhase, VM_LABEL, inventoryVmIsUp, type VMRestore, type VMSnapshot } from '../api/index.js';
import { Reason } from '../api/protocol.js';
import { inventoryUpdatedAt, lastFinishedOn, locateVM, type World } from './world.js';

export type RemoteRestore =
  /** `where` says on which node and why ("on node b, where VM "x" runs; fetching ..."). */
  | { kind: 'ok'; node: string; where: string }
  | { kind: 'wait'; reason: Reason; message: string }
  | { kind: 'fail'; message: string };

/** Where the target VM is, as the operator sees it. */
export type VMWhereabouts =
  | { kind: 'nowhere' }
  /** Its live pods are all bound to `node`, or (a VM without pods) `node`'s inventory has it up. */
  | { kind: 'node'; node: string; by: 'pods' | 'inventory' }
  /** Its live pods, or its running QEMUs, are on several nodes: no one place to restore it. */
  | { kind: 'spread'; nodes: string[]; by: 'pods' | 'inventory' }
  /** Its live pods wait for the scheduler: where it will run is not known yet. */
  | { kind: 'unscheduled'; pod: string }
  /** An inventory that has it up predates the VM's last operation (a hibernating save may have ended it). */
  | { kind: 'stale'; node: string };

/**
 * Pods first: they say where a VM pod lives even while its launcher has no QEMU (a wake restores
 * into that pod). A VM without pods is where a live agent reports its QEMU up, counted only from an
 * inventory written after the VM's last operation finished.
 */
export function whereVMRuns(world: World, namespace: string, vm: string, now: number): VMWhereabouts {
  const pods = world.pods.filter((p) => p.metadata.namespace === namespace && p.metadata.labels?.[VM_LABEL] === vm && !p.metadata.deletionTimestamp);
  if (pods.length > 0) {
    const nodes = [...new Set(pods.map((p) => p.spec?.nodeName).filter((n): n is string => !!n))].sort();
    if (nodes.length === 0) return { kind: 'unscheduled', pod: pods[0]!.metadata.name ?? vm };
    return nodes.length === 1 ? { kind: 'node', node: nodes[0]!, by: 'pods' } : { kind: 'spread', nodes, by: 'pods' };
  }
  const up = locateVM(world, namespace, vm, now).filter((l) => inventoryVmIsUp(l.vm.state));
  const last = lastFinishedOn(world, namespace, vm);
  const stale = up.find((l) => inventoryUpdatedAt(world, l.node) < last);
  if (stale) return { kind: 'stale', node: stale.node };
  const nodes = [...new Set(up.map((l) => l.node))].sort();
  if (nodes.length === 0) return { kind: 'nowhere' };
  return nodes.length === 1 ? { kind: 'node', node: nodes[0]!, by: 'inventory' } : { kind: 'spread', nodes, by: 'inventory' };
}

/**
 * The node a restore runs on, and the words saying why. `vm` is where the target VM is; it counts
 * only without spec.nodeName. A VM running nowhere is restored on the snapshot's node.
 */
export function remoteRestoreCheck(
  restore: Pick<VMRestore, 'spec'>,
  snapshot: Pick<VMSnapshot, 'metadata' | 'status'>,
  target?: { name: string; where: VMWhereabouts },
): RemoteRestore {
  const home = snapshot.status!.nodeName!;
  const name = snapshot.metadata.name;
  let wanted = restore.spec.nodeName;
  let there = `on node ${wanted} (spec.nodeName)`;
  let hint = '';
  if (!wanted && target) {
    const vm = `VM "${target.name}"`;
    const w = target.where;
    switch (w.kind) {
      case 'nowhere':
        break;
      case 'unscheduled':
        return { kind: 'wait', reason: Reason.WaitingForPod, message: `waiting for pod ${w.pod} of ${vm} to be scheduled: a restore without spec.nodeName runs on the node of its target VM` };
      case 'stale':
        return { kind: 'wait', reason: Reason.WaitingForInventory, message: `waiting for node ${w.node} to report the state of ${vm} after its last operation` };
      case 'spread':
        return {
          kind: 'fail',
          message:
            `${vm} ${w.by === 'pods' ? 'has live pods' : 'runs'} on nodes ${w.nodes.join(', ')}: a restore without spec.nodeName runs on the one node of its target VM; ` +
            `${w.by === 'pods' ? 'delete its pods' : 'stop it'} on all but one node, or set spec.nodeName`,
        };
      case 'node':
        wanted = w.node;
        there = `on node ${wanted}, where ${vm} runs`;
        hint = ` (spec.nodeName is not set, so a restore goes where its target VM runs): stop ${vm} on node ${wanted} to restore it on node ${home}, or restore a copy (spec.targetVMName)`;
        break;
    }
  }
  if (!wanted || wanted === home) return { kind: 'ok', node: home, where: `on node ${home}` };
  if (!snapshot.status?.effective?.repository) {
    return { kind: 'fail', message: `VMSnapshot "${name}" is on node ${home} and its class has no repository: it cannot be restored ${there}${hint}` };
  }
  const upload = snapshot.status.upload;
  if (upload?.phase === UploadPhase.Uploaded) return { kind: 'ok', node: wanted, where: `${there}; fetching VMSnapshot "${name}" from its repository` };
  if (upload?.phase === UploadPhase.Failed) {
    return { kind: 'fail', message: `VMSnapshot "${name}" failed to upload (${upload.message ?? 'no reason recorded'}): it cannot be restored ${there}${hint}` };
  }
  return { kind: 'wait', reason: Reason.WaitingForSnapshot, message: `waiting for VMSnapshot "${name}" to be uploaded to its repository before restoring it ${there}` };
}
