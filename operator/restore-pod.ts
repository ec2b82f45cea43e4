// Whether a VMRestore of a VM pod's snapshot needs a new pod, and where that pod stands. A copy
// (spec.targetVMName) always runs in a new pod; a wake whose pod is gone gets one too; a VM whose
// pod is there is restored in place. Pure: observed state in, one step out.
import type { FrozenDisk, RecordedVMPod } from '../api/index.js';
import { VM_LABEL } from '../api/index.js';
import { ownedBy, podTrouble, restorePodManifest, type PodView } from './vm-pod-record.js';
import { timeOf } from './world.js';

/** How long the operator's pod gets to run its launcher and show up in the node's inventory. */
export const RESTORE_POD_READY_MS = 180_000;

export interface RestorePodFacts {
  namespace: string;
  restore: { name: string; uid: string };
  snapshotName: string;
  sourceVMName: string;
  targetVMName: string;
  copy: boolean;
  node: string;
  record: RecordedVMPod;
  disks: readonly FrozenDisk[];
  /** Pods of the restore's namespace the operator sees (VM pods and its own). */
  pods: readonly PodView[];
  /** The node's inventory entry for the target VM, and when that inventory was written. */
  inventory: { state?: string; updatedAt: number };
  now: number;
}

export type RestorePodStep =
  /** The target VM's own pod is there: restore into it as any in-place restore. */
  | { kind: 'inPlace' }
  | { kind: 'create'; pod: PodView & { apiVersion: string; kind: string } }
  | { kind: 'wait'; message: string }
  /** The pod made for this restore runs its launcher: hand the restore to the node. */
  | { kind: 'ready'; pod: { name: string; uid: string } }
  | { kind: 'fail'; reason: 'InvalidSpec' | 'VMRunning' | 'Failed'; message: string; deletePod?: { name: string; uid: string } };

/**
 * Writable disks are the one piece of state a copy could share with its source: the frozen layers
 * live in the source pod's volumes, so a copy would need its own overlay of each, made here.
 */
export function copyRefusedForDisks(disks: readonly FrozenDisk[]): string | undefined {
  if (disks.length === 0) return undefined;
  return (
    `the snapshot froze writable disks (${disks.slice(0, 8).map((d) => d.device).join(', ')}): a copy of a VM pod with writable disks ` +
    'would share them with its source, and is refused; restore the VM itself (omit spec.targetVMName)'
  );
}

const live = (p: PodView) => !p.metadata.deletionTimestamp;

export function decideRestorePod(f: RestorePodFacts): RestorePodStep {
  const inNs = f.pods.filter((p) => p.metadata.namespace === f.namespace);
  const ours = inNs.find((p) => p.metadata.name === f.targetVMName && ownedBy(p, f.restore.uid));
  if (ours) return ourPod(f, ours);

  const field = f.copy ? 'spec.targetVMName' : "the snapshot's VM";
  const sameName = inNs.find((p) => p.metadata.name === f.targetVMName);
  const vmPods = inNs.filter((p) => p.metadata.labels?.[VM_LABEL] === f.targetVMName && live(p));
  if (f.copy) {
    const taken = vmPods[0] ?? sameName;
    if (taken) {
      return {
        kind: 'fail',
        reason: 'InvalidSpec',
        message: `${field} "${f.targetVMName}" is taken: pod ${taken.metadata.name} in namespace ${f.namespace}${vmPods[0] ? ` runs VM ${f.targetVMName}` : ' exists'}; a copy gets a new pod named after spec.targetVMName, so choose a name no pod or VM of this namespace has`,
      };
    }
    const disks = copyRefusedForDisks(f.disks);
    if (disks) return { kind: 'fail', reason: 'InvalidSpec', message: disks };
  } else {
    if (vmPods.length > 0) return { kind: 'inPlace' };
    if (sameName && live(sameName)) {
      return { kind: 'fail', reason: 'InvalidSpec', message: `VM ${f.targetVMName} has no pod, and pod ${f.targetVMName} in namespace ${f.namespace} is not a VM pod (no ${VM_LABEL}=${f.targetVMName} label): delete or rename it to wake the VM into a new pod` };
    }
    if (sameName) return { kind: 'wait', message: `waiting for pod ${f.targetVMName} to finish terminating before the VM is woken in a new pod of that name` };
  }
  const made = restorePodManifest(f.record, {
    namespace: f.namespace,
    vmName: f.targetVMName,
    node: f.node,
    restore: f.restore,
    snapshotName: f.snapshotName,
  });
  if (!made.ok) return { kind: 'fail', reason: 'Failed', message: made.reason };
  return { kind: 'create', pod: made.pod };
}

function ourPod(f: RestorePodFacts, pod: PodView): RestorePodStep {
  const ref = { name: pod.metadata.name!, uid: pod.metadata.uid! };
  const what = `pod ${ref.name} (made for this restore)`;
  if (pod.metadata.deletionTimestamp) return { kind: 'fail', reason: 'Failed', message: `${what} was deleted before the restore began` };
  // Kubernetes' Pod phase (Pending, Running, Succeeded, Failed), not a vmsnap Phase.
  const podPhase = pod.status?.phase;
  if (podPhase === 'Failed' || podPhase === 'Succeeded') {
    return { kind: 'fail', reason: 'Failed', message: `${what} ended (${podTrouble(pod)}) before the restore began; it was deleted`, deletePod: ref };
  }
  const created = timeOf(pod.metadata.creationTimestamp);
  // The agent has seen this pod's launcher: its inventory, written after the pod was made, lists the VM.
  const seen = podPhase === 'Running' && f.inventory.state !== undefined && f.inventory.state !== 'unreachable' && f.inventory.updatedAt > created;
  if (seen) return { kind: 'ready', pod: ref };
  if (f.now - created > RESTORE_POD_READY_MS) {
    return {
      kind: 'fail',
      reason: 'Failed',
      message: `${what} did not come up on node ${f.node} within ${RESTORE_POD_READY_MS / 1000}s (${podTrouble(pod)}); it was deleted`,
      deletePod: ref,
    };
  }
  return { kind: 'wait', message: `waiting for ${what} to run its launcher on node ${f.node} (${podPhase === 'Running' ? "the node's agent has not reported it yet" : podTrouble(pod)})` };
}
