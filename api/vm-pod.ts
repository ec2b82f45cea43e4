// How a VM runs as a Pod and how the node agent talks to it. A VM is a Pod labelled
// VM_LABEL=<vmName> whose container runs the vmsnap launcher; the launcher owns QEMU and keeps
// its sockets in the pod's own emptyDir volume VM_RUN_VOLUME (mounted at VM_RUN_MOUNT in the
// pod). The agent reaches that volume on the node under the kubelet's pod directory by pod uid
// (<kubeletRootDir>/pods/<uid>/volumes/kubernetes.io~empty-dir/<VM_RUN_VOLUME>/), opens every
// path beneath it without following symlinks, and checks that the peer of each socket is a
// process of that pod. Everything the launcher says is tenant input: parse it with these schemas.
import { z } from 'zod';

/** Label that makes a Pod a VM; its value is the VM's name (a DNS-1123 label). */
export const VM_LABEL = 'vmsnap.io/vm';
/** The emptyDir volume that holds the launcher's and QEMU's sockets. */
export const VM_RUN_VOLUME = 'vmsnap-run';
/** Where the VM container mounts VM_RUN_VOLUME. */
export const VM_RUN_MOUNT = '/run/vmsnap';
/** QEMU's QMP socket, created by QEMU inside VM_RUN_VOLUME (the launcher adds the -qmp option). */
export const VM_QMP_SOCKET = 'qmp.sock';
/** The launcher's control socket inside VM_RUN_VOLUME. */
export const VM_LAUNCHER_SOCKET = 'launcher.sock';

/**
 * Launcher control protocol: newline-delimited JSON over VM_LAUNCHER_SOCKET, one request and one
 * reply per line, in order.
 * - status: what the launcher is doing now.
 * - restart-incoming: stop the running QEMU (if any; quit, then SIGKILL after a grace period),
 *   start QEMU again from the pod's own command line plus `-incoming defer`, and reply once its
 *   QMP socket accepts connections. The agent then drives the restore over QMP.
 * - start: start QEMU from the pod's own command line if none runs (after a hibernate).
 */
export const LauncherRequestSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('status') }),
  z.strictObject({ op: z.literal('restart-incoming') }),
  z.strictObject({ op: z.literal('start') }),
]);
export type LauncherRequest = z.infer<typeof LauncherRequestSchema>;

export const LauncherStateSchema = z.enum(['running', 'incoming', 'stopped', 'starting']);
export type LauncherState = z.infer<typeof LauncherStateSchema>;

export const LauncherReplySchema = z.discriminatedUnion('ok', [
  z.strictObject({
    ok: z.literal(true),
    state: LauncherStateSchema,
    /** QEMU's pid as the launcher sees it (in the pod's pid namespace); informational only. */
    qemuPid: z.number().int().positive().optional(),
    /** How many times the launcher has started QEMU. */
    generation: z.number().int().min(0),
  }),
  z.strictObject({ ok: z.literal(false), error: z.string().max(4096) }),
]);
export type LauncherReply = z.infer<typeof LauncherReplySchema>;
