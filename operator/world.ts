// The operator's view of the cluster (from its informers), and the questions
// the reconcilers ask of it.
import { Phase, type InventoryVM, type VMInventory, type VMRestore, type VMSnapshot, type VMSnapshotClass } from '../api/index.js';
import { isTerminal } from '../api/protocol.js';
import type { PodView } from './vm-pod-record.js';

export interface World {
  snapshots: readonly VMSnapshot[];
  restores: readonly VMRestore[];
  classes: readonly VMSnapshotClass[];
  inventories: readonly VMInventory[];
  /** VM pods (labelled vmsnap.io/vm) in every namespace, the operator's own among them. */
  pods: readonly PodView[];
  /** Operations the controller assigned whose label the informer may not show yet: vmKey -> object key. */
  recentlyAssigned: ReadonlyMap<string, string>;
}

export const vmKey = (namespace: string, vm: string) => `${namespace}/${vm}`;
export const objectKey = (kind: string, namespace: string | undefined, name: string | undefined) => `${kind}/${namespace ?? ''}/${name ?? ''}`;

export function timeOf(t: string | Date | undefined): number {
  if (!t) return 0;
  const ms = t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isNaN(ms) ? 0 : ms;
}

export interface VMLocation {
  node: string;
  vm: InventoryVM;
}

/**
 * The node an inventory speaks for: its name. Admission lets an agent write only the inventory
 * named after the node in its token, while status.nodeName is whatever that agent wrote, so
 * trusting it would let one node's agent draw another node's VMs (and their work) to itself.
 */
export function inventoryNode(inv: VMInventory): string {
  return inv.metadata.name ?? '';
}

/** Where the live agents see namespace/name. Only that namespace is searched: no cross-namespace access. */
export function locateVM(world: World, namespace: string, name: string, now: number): VMLocation[] {
  const found: VMLocation[] = [];
  for (const inv of liveInventories(world, now)) {
    const node = inventoryNode(inv);
    const vm = inv.status?.vms?.find((v) => v.namespace === namespace && v.name === name);
    if (node && vm) found.push({ node, vm });
  }
  return found;
}

/** An inventory not refreshed for this long belongs to a node whose agent is gone. */
export const INVENTORY_LIVE_MS = 120_000;

/**
 * True when every live agent has published an inventory since `since` (so "not found" is an
 * answer, not a lag). Inventories of agents gone for longer than INVENTORY_LIVE_MS are ignored.
 */
export function inventoriesFreshSince(world: World, since: number, now: number): boolean {
  const live = liveInventories(world, now);
  return live.length > 0 && live.every((i) => timeOf(i.status?.updatedTime) >= since);
}

export function liveInventories(world: World, now: number): VMInventory[] {
  return world.inventories.filter((i) => now - timeOf(i.status?.updatedTime) < INVENTORY_LIVE_MS);
}

/** An operation that holds its VM: assigned or running, not finished. */
function active(o: { metadata: { deletionTimestamp?: unknown }; status?: { phase?: string; nodeName?: string } }): boolean {
  return !isTerminal(o.status?.phase) && (o.status?.phase === Phase.InProgress || !!o.status?.nodeName);
}

/** Another operation currently holding the VM, if any: "VMSnapshot/name" or "VMRestore/name". */
export function operationHoldingVM(world: World, namespace: string, vm: string, selfKey: string): string | undefined {
  for (const s of world.snapshots) {
    const key = objectKey('VMSnapshot', s.metadata.namespace, s.metadata.name);
    if (key !== selfKey && s.metadata.namespace === namespace && s.spec.vmName === vm && active(s)) return `VMSnapshot ${s.metadata.name}`;
  }
  for (const r of world.restores) {
    const key = objectKey('VMRestore', r.metadata.namespace, r.metadata.name);
    if (key !== selfKey && r.metadata.namespace === namespace && r.status?.effective?.targetVMName === vm && active(r)) return `VMRestore ${r.metadata.name}`;
  }
  const recent = world.recentlyAssigned.get(vmKey(namespace, vm));
  if (recent && recent !== selfKey) {
    const [kind, , name] = recent.split('/');
    return `${kind} ${name}`;
  }
  return undefined;
}

/** When the last operation on namespace/vm finished (a hibernating save ends its QEMU). */
export function lastFinishedOn(world: World, namespace: string, vm: string): number {
  let last = 0;
  for (const s of world.snapshots) {
    if (s.metadata.namespace === namespace && s.spec.vmName === vm) last = Math.max(last, timeOf(s.status?.completionTime));
  }
  for (const r of world.restores) {
    if (r.metadata.namespace === namespace && r.status?.effective?.targetVMName === vm) last = Math.max(last, timeOf(r.status?.completionTime));
  }
  return last;
}

export function inventoryUpdatedAt(world: World, node: string): number {
  const inv = world.inventories.find((i) => inventoryNode(i) === node);
  return timeOf(inv?.status?.updatedTime);
}
