// VMInventory: what one node's agent sees. Cluster-scoped, one object per node, named after the
// node; the operator resolves a VM name to its node from these, and users can list them.
import { z } from 'zod';
import { API_VERSION, ObjectMetaSchema, VMINVENTORY_KIND, byteCount, timestamp } from './common.js';

export const InventoryVMSchema = z.object({
  namespace: z.string().min(1).max(63).describe('Namespace the VM belongs to (from where its QMP socket lives).'),
  name: z.string().min(1).max(63).describe('VM name (from where its QMP socket lives).'),
  qmpSocket: z.string().max(4096).describe('Absolute path of the QMP socket on the node.'),
  state: z.string().max(64).describe('QEMU run state from query-status (running, paused, inmigrate, ...), "stopped" (a VM pod whose launcher runs no QEMU, e.g. hibernated), or "unreachable".'),
  memoryBytes: byteCount('Guest RAM size in bytes.').optional(),
  qemuVersion: z.string().max(128).optional().describe('QEMU version.'),
  machine: z.string().max(256).optional().describe('QEMU machine type.'),
  pid: z.number().int().min(0).optional().describe('QEMU process id on the node.'),
  message: z.string().max(1024).optional().describe('Why the VM could not be queried, if it could not.'),
});
export type InventoryVM = z.infer<typeof InventoryVMSchema>;

/** Whether an inventory state means a QEMU is there (a VM pod with no QEMU says "stopped"). */
export function inventoryVmIsUp(state: string): boolean {
  return state !== 'unreachable' && state !== 'stopped';
}

export const VMInventoryStatusSchema = z
  .object({
    nodeName: z.string().max(253).optional().describe('The node this inventory describes, as its agent wrote it; the operator goes by metadata.name, which admission ties to the node of the agent that writes it.'),
    agentVersion: z.string().max(64).optional().describe('Version of the agent that published it.'),
    updatedTime: timestamp('When the agent last refreshed this inventory (a heartbeat).').optional(),
    vmRoot: z.string().max(4096).optional().describe('Directory under which the agent discovers QMP sockets.'),
    storageRoot: z.string().max(4096).optional().describe('Directory under which the agent writes snapshot files.'),
    storageFreeBytes: byteCount('Free bytes under storageRoot.').optional(),
    vmCount: z.number().int().min(0).optional().describe('Number of entries in vms.'),
    vms: z
      .array(InventoryVMSchema)
      .max(1024)
      .optional()
      .describe('The VMs the agent found.')
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['namespace', 'name'] }),
  })
  .describe('Published by the node agent.');
export type VMInventoryStatus = z.infer<typeof VMInventoryStatusSchema>;

export const VMInventorySchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(VMINVENTORY_KIND),
  metadata: ObjectMetaSchema,
  status: VMInventoryStatusSchema.optional(),
});
export type VMInventory = z.infer<typeof VMInventorySchema>;
