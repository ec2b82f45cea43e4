// How the operator hands work to a node's agent, and how the agent reports
// back. Everything travels through the objects themselves:
//
// 1. The operator resolves the VM to a node (VMInventory), records the
//    settings in force in status.effective, sets status.nodeName and the
//    label NODE_LABEL=<node>, phase Pending, condition Ready=False reason
//    Assigned. The agent watches only objects labelled with its node.
// 2. The agent claims an assigned Pending object by patching phase
//    InProgress (with metadata.resourceVersion: a 409 means someone else
//    changed it first), runs the work, patches progress (at most PROGRESS
//    updates a second), then Succeeded or Failed with status.error.
// 3. Deadlines: the operator fails an InProgress object past its
//    failureDeadline; an agent that sees its running object Failed or
//    deleted cancels the work (the VM resumed, the partial file removed).
// 4. Deletion: the operator holds SNAPSHOT_FINALIZER on every VMSnapshot.
//    When one is deleted, the agent cancels a running save, or removes the
//    file when the deletion policy is Delete, and then sets
//    status.fileDeleted (or phase Failed for a cancelled save); the operator
//    removes the finalizer once the agent is done, at once for Retain.
import { Phase, TERMINAL_PHASES } from './common.js';
import type { VMRestore } from './vmrestore.js';
import type { VMSnapshot } from './vmsnapshot.js';

/** Label on VMSnapshots and VMRestores: the node whose agent does the work. */
export const NODE_LABEL = 'vmsnap.io/node';

/** Condition reasons (the same reason on Ready, Progressing and Failed: see api/conditions.ts). */
export const Reason = {
  Assigned: 'Assigned',
  WaitingForVM: 'WaitingForVM',
  WaitingForSnapshot: 'WaitingForSnapshot',
  WaitingForInventory: 'WaitingForInventory',
  CreatingPod: 'CreatingPod',
  WaitingForPod: 'WaitingForPod',
  VMNotFound: 'VMNotFound',
  ClassNotFound: 'ClassNotFound',
  VMRunning: 'VMRunning',
  SnapshotNotFound: 'SnapshotNotFound',
  SnapshotFailed: 'SnapshotFailed',
  InvalidSpec: 'InvalidSpec',
  InProgress: 'InProgress',
  Succeeded: 'Succeeded',
  Failed: 'Failed',
  DeadlineExceeded: 'DeadlineExceeded',
  Cancelled: 'Cancelled',
  AgentRestarted: 'AgentRestarted',
  /** QEMU did nothing with the snapshot file for the agent's stallTimeoutSeconds. */
  MigrationStalled: 'MigrationStalled',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** Most progress patches per second per object. */
export const MAX_PROGRESS_UPDATES_PER_SECOND = 2;

/** The agent's VMRestore/VMSnapshot events and the operator's share one component prefix. */
export const OPERATOR_COMPONENT = 'vmsnap-operator';
export const AGENT_COMPONENT = 'vmsnap-agent';

/** How much of an object's name goes into its file name: names may have 253 characters, a file name at most 255 bytes. */
export const FILE_NAME_PART_MAX = 200;

/** Where the agent puts a snapshot file: never a user-supplied path. The uid keeps shortened names apart. */
export function snapshotFileName(snapshot: { metadata: { name?: string; uid?: string } }): string {
  const uid = (snapshot.metadata.uid ?? '').replace(/[^a-f0-9]/g, '').slice(0, 12) || 'nouid';
  return `${(snapshot.metadata.name ?? '').slice(0, FILE_NAME_PART_MAX)}-${uid}.vms`;
}

/** Is the object waiting for an agent to claim it on `node`? */
export function isAssignedTo(obj: VMSnapshot | VMRestore, node: string): boolean {
  return obj.metadata.labels?.[NODE_LABEL] === node && obj.status?.nodeName === node && obj.status?.phase === Phase.Pending && !!obj.status?.effective;
}

/** Succeeded or Failed: final (the API server refuses any other phase after them). */
export function isTerminal(phase: string | undefined): boolean {
  return (TERMINAL_PHASES as readonly string[]).includes(phase ?? '');
}
