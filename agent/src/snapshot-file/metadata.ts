// The JSON metadata in a snapshot file's header: one zod schema, parsed on every read.
import { z } from 'zod';
import { SNAPSHOT_FORMAT_VERSION } from './header.js';

export const DirectIOModeSchema = z.enum(['auto', 'on', 'off']);
export type DirectIOMode = z.infer<typeof DirectIOModeSchema>;

export const SnapshotMetadataSchema = z.object({
  formatVersion: z.literal(SNAPSHOT_FORMAT_VERSION),
  createdAt: z.string(),
  completedAt: z.string().optional(),
  vm: z.object({
    /** Namespace and name when the agent knows them (from where the socket lives). */
    namespace: z.string().optional(),
    name: z.string().optional(),
    qmpSocket: z.string(),
  }),
  qemu: z.object({
    version: z.string(),
    machine: z.string(),
    pid: z.number().int(),
    /** The QEMU command line, from /proc/<pid>/cmdline: what a restore relaunches. */
    argv: z.array(z.string()),
    cwd: z.string().optional(),
  }),
  ram: z.object({
    bytes: z.number().int().nonnegative(),
    /** The id of the main RAM block (e.g. pc.ram): what a lazy restore maps. */
    mainBlockId: z.string().optional(),
  }),
  capture: z.object({
    mode: z.enum(['Paused', 'Live']),
    wasRunning: z.boolean(),
    after: z.enum(['resume', 'stop']),
  }),
  stream: z.object({
    offset: z.number().int().positive(),
    channels: z.number().int().min(1).max(64),
    directIO: z.boolean(),
    directIOReason: z.string().optional(),
    /** File size when complete: shorter means truncated. */
    endOffset: z.number().int().optional(),
    /** CRC32 of every stream byte outside the RAM page regions (headers, bitmaps, device state). */
    structureCrc32: z.number().int().optional(),
  }),
  /**
   * The VM's writable disks, frozen at the instant the RAM was captured: `base`
   * holds the disk as of the snapshot and is never written again; a restore
   * starts the VM on a fresh qcow2 overlay of it in place of `argvPath`.
   */
  disks: z
    .array(
      z.object({
        /** The drive's BlockBackend name, qdev path or node name. */
        device: z.string(),
        /** The image the recorded command line names for this disk. */
        argvPath: z.string(),
        base: z.string(),
        baseFormat: z.string(),
        virtualSize: z.number().int().nonnegative(),
        /** The overlay the saved VM continued on (absent when it stopped after the save). */
        overlay: z.string().optional(),
      }),
    )
    .optional(),
  stats: z
    .object({
      durationMs: z.number(),
      migrateMs: z.number(),
      syncMs: z.number(),
      vmPausedMs: z.number(),
      bytesWritten: z.number().int(),
      throughputMiBps: z.number(),
      /** Milliseconds the disk freeze added to the pause. */
      diskFreezeMs: z.number().optional(),
    })
    .optional(),
});
export type SnapshotMetadata = z.infer<typeof SnapshotMetadataSchema>;

/** The sidecar <file>.digests of the verification mode (see digests.ts). */
export const SnapshotDigestsSchema = z.object({
  formatVersion: z.literal(1),
  algorithm: z.enum(['sha256', 'crc32']),
  regionBytes: z.number().int().positive(),
  /** The snapshot these digests belong to. */
  snapshot: z.object({ completedAt: z.string(), endOffset: z.number().int(), structureCrc32: z.number().int() }),
  /** Per RAM block, one hex digest per region of `regionBytes` of its page area (present pages only). */
  blocks: z.array(z.object({ id: z.string(), usedLength: z.number().int(), regions: z.array(z.string()) })),
  stats: z.object({ durationMs: z.number(), bytesHashed: z.number().int() }),
});
export type SnapshotDigests = z.infer<typeof SnapshotDigestsSchema>;
export type DigestAlgorithm = SnapshotDigests['algorithm'];
