// The node agent's configuration file (the chart renders it into a ConfigMap from its values).
import { z } from 'zod';
import { DEFAULT_STALL_TIMEOUT_SECONDS } from './agent-defaults.js';

export const DEFAULT_VM_ROOT = '/var/lib/vmsnap/vms';
export const DEFAULT_STORAGE_ROOT = '/var/lib/vmsnap/snapshots';
/** Relative to vmRoot; the two directories above the socket are the VM's namespace and name. */
export const DEFAULT_SOCKET_GLOBS = ['*/*/qmp.sock'];
export const DEFAULT_KUBELET_ROOT_DIR = '/var/lib/kubelet';
export { DEFAULT_STALL_TIMEOUT_SECONDS };
/**
 * Where the agent finds VMs: 'pods' (Pods labelled vmsnap.io/vm on its node, sockets reached
 * beneath the pod's run volume, peers checked; what the chart sets) or 'sockets' (QMP socket globs
 * under vmRoot: the single host, QEMUs its owner started).
 */
export const VmSourceSchema = z.enum(['pods', 'sockets']);
export type VmSource = z.infer<typeof VmSourceSchema>;

const absolutePath = (field: string) =>
  z.string().min(1).refine((p) => p.startsWith('/'), { error: `${field} must be an absolute path` });

export const AgentConfigSchema = z.strictObject({
  vmSource: VmSourceSchema.default('sockets').describe(
    "How VMs are found: 'pods' (Pods labelled vmsnap.io/vm on this node; identity from the API, sockets opened beneath the pod's volume) or 'sockets' (socketGlobs under vmRoot).",
  ),
  kubeletRootDir: absolutePath('kubeletRootDir')
    .default(DEFAULT_KUBELET_ROOT_DIR)
    .describe("The kubelet's root directory on the node (its --root-dir): VM pods' volumes are under <kubeletRootDir>/pods/<pod uid>/volumes/."),
  vmRoot: absolutePath('vmRoot')
    .default(DEFAULT_VM_ROOT)
    .describe('Directory holding <namespace>/<vmName>/ per VM; discovery globs are relative to it.'),
  storageRoot: absolutePath('storageRoot')
    .default(DEFAULT_STORAGE_ROOT)
    .describe('Directory under which the agent creates snapshot files.'),
  socketGlobs: z
    .array(z.string().min(1))
    .min(1)
    .default(DEFAULT_SOCKET_GLOBS)
    .describe('QMP socket globs relative to vmRoot (made absolute with @dsherret/to-absolute-glob).'),
  inventoryIntervalSeconds: z
    .number()
    .int()
    .min(5)
    .max(3600)
    .default(30)
    .describe('How often the agent rescans VMs and refreshes its VMInventory.'),
  maxConcurrentOperations: z
    .number()
    .int()
    .min(1)
    .max(64)
    .default(2)
    .describe('Saves and restores this agent runs at once (each on its own VM); more wait Pending, so the node disk is not split too many ways.'),
  maxOperationsPerNamespace: z
    .number()
    .int()
    .min(1)
    .max(64)
    .optional()
    .describe(
      'Of those, the most one namespace runs at once (default: maxConcurrentOperations - 1, at least 1), so that one namespace never holds every slot; a freed slot goes to the waiting namespace that runs the fewest operations, then to the one served least recently.',
    ),
  stallTimeoutSeconds: z
    .number()
    .int()
    .min(5)
    .max(3600)
    .default(DEFAULT_STALL_TIMEOUT_SECONDS)
    .describe(
      "A save fails (reason MigrationStalled) when QEMU writes nothing to the snapshot file for this long, a restore when QEMU reads nothing from it, whatever QEMU's QMP reports; the VM is put back as it was.",
    ),
})
  .superRefine((c, ctx) => {
    const perNs = c.maxOperationsPerNamespace;
    if (perNs !== undefined && c.maxConcurrentOperations > 1 && perNs >= c.maxConcurrentOperations) {
      ctx.addIssue({
        code: 'custom',
        path: ['maxOperationsPerNamespace'],
        message: `must be less than maxConcurrentOperations (${c.maxConcurrentOperations}), or one namespace could hold every slot while others wait`,
      });
    }
    if (perNs !== undefined && c.maxConcurrentOperations === 1 && perNs !== 1) {
      ctx.addIssue({ code: 'custom', path: ['maxOperationsPerNamespace'], message: 'must be 1 when maxConcurrentOperations is 1' });
    }
  });
export type AgentConfig = z.infer<typeof AgentConfigSchema>;
export type AgentConfigInput = z.input<typeof AgentConfigSchema>;

/** The node's slots: all of them, and the most one namespace may hold (maxOperationsPerNamespace or its default). */
export function operationSlots(c: Pick<AgentConfig, 'maxConcurrentOperations' | 'maxOperationsPerNamespace'>): { total: number; perNamespace: number } {
  const total = c.maxConcurrentOperations;
  return { total, perNamespace: c.maxOperationsPerNamespace ?? Math.max(1, total - 1) };
}
