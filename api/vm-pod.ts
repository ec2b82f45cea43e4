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
 * - restart-incoming: stop the running QEMU (if any; SIGTERM, then SIGKILL after a grace period),
 *   start QEMU again from the pod's own command line plus `-incoming defer`, and reply once its
 *   QMP socket accepts connections (the launcher connects once and closes: QMP serves one client
 *   at a time, and the agent is the one that needs it). The agent then drives the restore over QMP.
 *   With `lazy` (restoreMode Lazy): the main RAM block is to be mapped from a snapshot file the
 *   agent opened read-only. The launcher stops reading the connection and replies with
 *   `awaitingFd: true`; the agent then sends one byte carrying that fd (SCM_RIGHTS); the launcher
 *   checks it is a regular file long enough for `offset + sizeBytes`, starts QEMU with the RAM
 *   backend `lazy.ramBackendId` as `memory-backend-file,mem-path=/proc/self/fd/<N>,offset=...,
 *   share=off,readonly=on,rom=off` (the fd inherited as N), closes its own copy, and sends the
 *   final reply. The launcher never opens a path for this: only holders of the fd reach the file.
 *   With `disks` (a snapshot that froze writable disks): for each entry, the launcher finds the
 *   `-drive file=` / `-blockdev filename=` of its own command line that names an image of
 *   `chain`, and starts this QEMU with that image replaced by `chain[0]` (the snapshot's frozen
 *   layer, qcow2) for this start only; no image of a chain on the command line is an error reply.
 *   The agent then has that QEMU (QMP `blockdev-snapshot-sync`, before `migrate-incoming`) create
 *   a fresh overlay on the frozen layer, so the restored VM never writes the snapshot's state.
 *   Neither the launcher nor the agent opens these paths: only QEMU, as the pod's user, does.
 * - start: start QEMU from the pod's own command line if none runs (after a hibernate); with a
 *   QEMU already there it changes nothing and replies with the current state.
 * Requests that change the process run one at a time; `status` answers at once, also while a
 * restart is under way. A request line longer than VM_LAUNCHER_MAX_REQUEST_BYTES gets an error
 * reply and the connection is closed; any other bad line gets an error reply.
 */
/** Largest guest RAM a lazy restart maps (16 TiB); offsets are bounded the same way. */
export const VM_LAZY_MAX_BYTES = 2 ** 44;

/** Where the main RAM block lies in the snapshot file passed with a lazy restart-incoming. */
export const LazyMappingSchema = z.strictObject({
  /** The main RAM block's id (its memory backend's id), e.g. `pc.ram`. */
  ramBackendId: z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/, 'a QOM id: a letter, then letters, digits, _ . -'),
  /** The block's size: the backend's size (whole 4 KiB pages). */
  sizeBytes: z.number().int().positive().max(VM_LAZY_MAX_BYTES).multipleOf(4096),
  /** Where the block's pages start in the file (page-aligned). */
  offset: z.number().int().min(0).max(VM_LAZY_MAX_BYTES).multipleOf(4096),
});
export type LazyMapping = z.infer<typeof LazyMappingSchema>;

/** Longest disk image path in a request, and how many disks and chain entries one names. */
export const VM_DISK_PATH_MAX = 1024;
export const VM_DISKS_MAX = 16;
export const VM_DISK_CHAIN_MAX = 32;

/** A disk image as the pod's QEMU names it: absolute and normal (no `.`/`..` segments, no `//`, no trailing `/`). */
export const PodImagePathSchema = z
  .string()
  .max(VM_DISK_PATH_MAX)
  .refine((p) => p.startsWith('/') && !p.includes('\0') && !p.endsWith('/') && p.split('/').slice(1).every((seg) => seg !== '' && seg !== '.' && seg !== '..'), {
    message: 'an absolute path without . or .. segments, empty segments or a trailing /',
  });

/** A writable disk started on the snapshot's frozen layer: `chain` is that layer and the images below it, top first. */
export const DiskSwapSchema = z.strictObject({
  chain: z.array(PodImagePathSchema).min(1).max(VM_DISK_CHAIN_MAX),
});
export type DiskSwap = z.infer<typeof DiskSwapSchema>;

export const LauncherRequestSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('status') }),
  z.strictObject({ op: z.literal('restart-incoming'), lazy: LazyMappingSchema.optional(), disks: z.array(DiskSwapSchema).min(1).max(VM_DISKS_MAX).optional() }),
  z.strictObject({ op: z.literal('start') }),
]);
export type LauncherRequest = z.infer<typeof LauncherRequestSchema>;

/** Longest request line the launcher reads (requests are a few dozen bytes; disk chains a few KiB). */
export const VM_LAUNCHER_MAX_REQUEST_BYTES = 64 * 1024;

/**
 * Environment of the VM container that the launcher reads. VMSNAP_RUN_DIR overrides VM_RUN_MOUNT
 * (process-level tests); VMSNAP_LAUNCHER_START says what to do at start-up: `run` (default) starts
 * QEMU from the command line, `wait` starts nothing (state `stopped`), `incoming` starts QEMU from
 * the command line plus `-incoming defer` (state `incoming`): the pod the operator makes for a
 * copy or a wake never boots a guest only to have it replaced by the restore.
 */
export const VM_RUN_DIR_ENV = 'VMSNAP_RUN_DIR';
export const VM_LAUNCHER_START_ENV = 'VMSNAP_LAUNCHER_START';
export const LauncherStartModeSchema = z.enum(['run', 'wait', 'incoming']);
export type LauncherStartMode = z.infer<typeof LauncherStartModeSchema>;

/**
 * - starting: a QEMU was spawned and its QMP socket does not accept connections yet;
 * - running: QEMU started from the pod's command line, QMP accepting;
 * - incoming: QEMU started with `-incoming defer`, QMP accepting; the launcher does not watch
 *   the migration, so this stays `incoming` after the agent has restored and resumed the VM,
 *   until that QEMU exits or is replaced;
 * - stopped: no QEMU (it exited on its own, e.g. after a hibernate's `quit`, or none was started).
 */
export const LauncherStateSchema = z.enum(['running', 'incoming', 'stopped', 'starting']);
export type LauncherState = z.infer<typeof LauncherStateSchema>;

export const LauncherReplySchema = z.discriminatedUnion('ok', [
  z.strictObject({
    ok: z.literal(true),
    state: LauncherStateSchema,
    /** QEMU's pid as the launcher sees it (in the pod's pid namespace); informational only. */
    qemuPid: z.number().int().positive().optional(),
    /**
     * Only in the interim reply to a lazy restart-incoming: the launcher now waits for the
     * snapshot fd (one byte with SCM_RIGHTS); the final reply follows the restart.
     */
    awaitingFd: z.literal(true).optional(),
    /** How many times the launcher has started QEMU. */
    generation: z.number().int().min(0),
    /** How the last QEMU ended (absent while none has ended). */
    lastExit: z
      .strictObject({
        code: z.number().int().nullable(),
        signal: z.string().max(32).nullable(),
      })
      .optional(),
  }),
  z.strictObject({ ok: z.literal(false), error: z.string().max(4096) }),
]);
export type LauncherReply = z.infer<typeof LauncherReplySchema>;
