// Whether a snapshot's node is lost: its agent has not renewed the node's VMInventory for longer
// than the grace period (operator setting VMSNAP_NODE_LOSS_GRACE_SECONDS). An agent renews it at
// its inventory interval for as long as it runs, so a deleted node, a NotReady node and a node
// whose agent is gone all stop renewing; a node whose agent still reports cleans up itself.
import { inventoryNode, timeOf, type World } from './world.js';

export const DEFAULT_NODE_LOSS_GRACE_SECONDS = 600;

export type NodeState = { kind: 'present'; lostInMs: number } | { kind: 'lost'; message: string };

/**
 * Silence counts from the agent's last renewal; a node that never published an inventory counts
 * from `fallbackSince` (the deletion's start), so it too waits a whole grace period.
 */
export function nodeState(world: Pick<World, 'inventories'>, node: string, now: number, graceMs: number, fallbackSince: number): NodeState {
  const renewed = timeOf(world.inventories.find((i) => inventoryNode(i) === node)?.status?.updatedTime);
  const silentMs = now - (renewed || fallbackSince);
  if (silentMs <= graceMs) return { kind: 'present', lostInMs: graceMs - silentMs + 1 };
  const last = renewed ? `its agent last renewed VMInventory ${node} at ${new Date(renewed).toISOString()}` : `no agent has published VMInventory ${node}`;
  return { kind: 'lost', message: `node ${node} is lost: ${last}, longer ago than the grace period (${Math.round(graceMs / 1000)} s)` };
}
