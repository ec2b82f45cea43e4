// The JSON metadata in a snapshot file's header: one zod schema, parsed on every read.
// zod/mini, not classic zod: the same checks from a fraction of the code, and
// a lazy restore parses this header on its way to a running VM (the engine's
// start-up snapshot, bin/vmsnap-agent, deserializes whatever it holds on every start).
import * as z from 'zod/mini';
import en from 'zod/v4/locales/en.js';
import { CONVERGENCE_METHODS } from '../../../api/capture.js';

// Messages that say what was expected (mini has none of its own until told).
z.config(en());

export const DirectIOModeSchema = z.enum(['auto', 'on', 'off']);
export type DirectIOMode = z.infer<typeof DirectIOModeSchema>;

/** The VMSnapshot a file belongs to: what a daemon restore compares with the VMSnapshot it restores from. */
export const SnapshotIdentitySchema = z.object({ namespace: z.string(), name: z.string(), uid: z.string() });
export type SnapshotIdentity = z.infer<typeof SnapshotIdentitySchema>;

export const SnapshotMetadataSchema = z.object({
  /** 2 since the header has a MAC (header.ts); 1 is still read, as an unauthenticated file. */
  formatVersion: z.union([z.literal(1), z.literal(2)]),
  createdAt: z.string(),
  completedAt: z.optional(z.string()),
  /** Set by the agent (never by the CLI): the header's MAC binds the file to this VMSnapshot. */
  snapshot: z.optional(SnapshotIdentitySchema),
  vm: z.object({
    /** Namespace and name when the agent knows them (from where the socket lives). */
    namespace: z.optional(z.string()),
    name: z.optional(z.string()),
    qmpSocket: z.string(),
  }),
  qemu: z.object({
    version: z.string(),
    machine: z.string(),
    pid: z.int(),
    /** With pid, which process that was (/proc/<pid>/stat starttime): a recycled pid is not the saved QEMU. */
    startTicks: z.optional(z.int()),
    /** The QEMU command line, from /proc/<pid>/cmdline: what a restore relaunches. */
    argv: z.array(z.string()),
    cwd: z.optional(z.string()),
  }),
  ram: z.object({
    bytes: z.int().check(z.nonnegative()),
    /** The id of the main RAM block (e.g. pc.ram): what a lazy restore maps. */
    mainBlockId: z.optional(z.string()),
  }),
  capture: z.object({
    mode: z.enum(['Paused', 'Live']),
    wasRunning: z.boolean(),
    after: z.enum(['resume', 'stop']),
    /** Live: how QEMU was made to finish the copy (engine/convergence.ts). */
    convergence: z.optional(z.enum(CONVERGENCE_METHODS)),
  }),
  stream: z.object({
    offset: z.int().check(z.positive()),
    channels: z.int().check(z.minimum(1), z.maximum(64)),
    directIO: z.boolean(),
    directIOReason: z.optional(z.string()),
    /** File size when complete: shorter means truncated. */
    endOffset: z.optional(z.int()),
    /** CRC32 of every stream byte outside the RAM page regions (headers, bitmaps, device state). */
    structureCrc32: z.optional(z.int()),
    /**
     * HMAC-SHA256 (hex) of the same bytes under the node's header key: QEMU may
     * still hold a writable fd after the save, and a CRC it can recompute.
     */
    structureMac: z.optional(z.string()),
  }),
  /**
   * The VM's writable disks, frozen at the instant the RAM was captured: `base`
   * holds the disk as of the snapshot and is never written again; a restore
   * starts the VM on a fresh qcow2 overlay of it in place of `argvPath`.
   */
  disks: z.optional(
    z.array(
      z.object({
        /** The drive's BlockBackend name, qdev path or node name. */
        device: z.string(),
        /** The image the recorded command line names for this disk. */
        argvPath: z.string(),
        base: z.string(),
        baseFormat: z.string(),
        /**
         * The base's device and inode when it was frozen: a restore creates an
         * overlay only on that very file, never on whatever the path names later.
         */
        baseFile: z.optional(z.object({ dev: z.int(), ino: z.int() })),
        virtualSize: z.int().check(z.nonnegative()),
        /** The overlay the saved VM continued on (absent when it stopped after the save). */
        overlay: z.optional(z.string()),
        /**
         * VM pods: the base and the images below it as the pod's QEMU named them (top first). A
         * restore asks the pod's launcher to start the disk on `base`; nothing here is opened by the agent.
         */
        chain: z.optional(z.array(z.string())),
      }),
    ),
  ),
  stats: z.optional(
    z.object({
      durationMs: z.number(),
      migrateMs: z.number(),
      syncMs: z.number(),
      vmPausedMs: z.number(),
      bytesWritten: z.int(),
      throughputMiBps: z.number(),
      /** Milliseconds the disk freeze added to the pause. */
      diskFreezeMs: z.optional(z.number()),
    }),
  ),
});
export type SnapshotMetadata = z.infer<typeof SnapshotMetadataSchema>;

/** The sidecar <file>.digests of the verification mode (see digests.ts). */
export const SnapshotDigestsSchema = z.object({
  formatVersion: z.literal(1),
  algorithm: z.enum(['sha256', 'crc32']),
  regionBytes: z.int().check(z.positive()),
  /** The snapshot these digests belong to. */
  snapshot: z.object({ completedAt: z.string(), endOffset: z.int(), structureCrc32: z.int() }),
  /** Per RAM block, one hex digest per region of `regionBytes` of its page area (present pages only). */
  blocks: z.array(z.object({ id: z.string(), usedLength: z.int(), regions: z.array(z.string()) })),
  stats: z.object({ durationMs: z.number(), bytesHashed: z.int() }),
});
export type SnapshotDigests = z.infer<typeof SnapshotDigestsSchema>;
export type DigestAlgorithm = SnapshotDigests['algorithm'];
