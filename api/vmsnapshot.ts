// VMSnapshot: save one VM's RAM and device state to a file on its node.
import { z } from 'zod';
import {
  API_VERSION,
  AfterSnapshotSchema,
  CaptureModeSchema,
  ConvergenceSchema,
  DEFAULT_AFTER_SNAPSHOT,
  DEFAULT_CAPTURE_MODE,
  DeletionPolicySchema,
  DirectIOSchema,
  ErrorInfoSchema,
  MAX_CHANNELS,
  MIN_CHANNELS,
  ObjectMetaSchema,
  ParallelismSchema,
  PhaseSchema,
  ProgressSchema,
  VMSNAPSHOT_KIND,
  byteCount,
  conditionsField,
  deletionPolicyField,
  digestsField,
  DIGESTS_DOC,
  directIOField,
  failureDeadlineField,
  dns1123Label,
  dns1123Subdomain,
  immutableOptionalRule,
  immutableRule,
  milliseconds,
  terminalPhaseRule,
  timestamp,
  validations,
} from './common.js';
import { RepositorySchema, UploadStatusSchema } from './repository.js';

export const VMSnapshotSpecSchema = z
  .object({
    vmName: dns1123Label('vmName')
      .describe('The VM to snapshot, in the same namespace as this VMSnapshot. Immutable.')
      .meta(validations(immutableRule('vmName'))),
    className: dns1123Subdomain('className')
      .describe('VMSnapshotClass supplying defaults; when omitted, the class annotated vmsnap.io/is-default-class=true, else built-in defaults. Immutable.')
      .optional(),
    parallelism: ParallelismSchema.optional(),
    directIO: directIOField().optional(),
    captureMode: CaptureModeSchema.describe(
      'Paused: pause the VM, copy its RAM, then apply afterSnapshot. Live: copy while the VM runs and pause only for the last dirty pages.',
    )
      .meta(validations(immutableRule('captureMode')))
      .default(DEFAULT_CAPTURE_MODE),
    afterSnapshot: AfterSnapshotSchema.describe(
      'Resume: the VM keeps running after the save. Stop: hibernate, the QEMU process ends once the file is complete.',
    )
      .meta(validations(immutableRule('afterSnapshot')))
      .default(DEFAULT_AFTER_SNAPSHOT),
    failureDeadline: failureDeadlineField('save'),
    deletionPolicy: deletionPolicyField().optional(),
    digests: digestsField().describe(
      `Verification mode: ${DIGESTS_DOC} Unset: the class's digests, else None. Immutable.`,
    ).optional(),
  })
  .describe('What to snapshot and how. Everything but deletionPolicy is immutable.')
  .meta(
    validations(
      immutableOptionalRule('className'),
      immutableOptionalRule('parallelism'),
      immutableOptionalRule('directIO'),
    ),
  );
export type VMSnapshotSpec = z.infer<typeof VMSnapshotSpecSchema>;
export type VMSnapshotSpecInput = z.input<typeof VMSnapshotSpecSchema>;

/** The spec after class and built-in defaults are applied; the operator records it in status. */
export const EffectiveSnapshotSpecSchema = z
  .object({
    className: z.string().max(253).optional().describe('The VMSnapshotClass that supplied defaults, if any.'),
    channels: z.number().int().min(MIN_CHANNELS).max(MAX_CHANNELS).describe('Multifd channels used.'),
    directIO: DirectIOSchema.describe('Requested direct I/O mode.'),
    captureMode: CaptureModeSchema.describe('Capture mode used.'),
    afterSnapshot: AfterSnapshotSchema.describe('What happens to the VM after the save.'),
    failureDeadline: z.string().max(32).describe('Deadline used.'),
    deletionPolicy: DeletionPolicySchema.describe('Deletion policy in force.'),
    // Optional: statuses written before the field existed stay valid (absent means None).
    digests: digestsField().optional().describe('Whether RAM digests are recorded after the save (spec.digests, else the class): None or Record.'),
    repository: RepositorySchema.optional().describe("The class's repository the snapshot is uploaded to after the save (absent: the snapshot stays on its node)."),
  })
  .describe('The settings in force after applying the class and built-in defaults.');
export type EffectiveSnapshotSpec = z.infer<typeof EffectiveSnapshotSpecSchema>;

export const SnapshotFileSchema = z
  .object({
    path: z.string().max(4096).describe('Path of the snapshot file on the node (chosen by the agent under its storage root).'),
    logicalBytes: byteCount('Logical (apparent) size of the file.').optional(),
    allocatedBytes: byteCount('Bytes allocated on disk (files are sparse: about the touched RAM).').optional(),
  })
  .describe('Where the snapshot lives.');
export type SnapshotFile = z.infer<typeof SnapshotFileSchema>;

export const QemuInfoSchema = z
  .object({
    version: z.string().max(128).optional().describe('QEMU version that wrote the snapshot.'),
    machine: z.string().max(256).optional().describe('QEMU machine type, needed for a compatible restore.'),
  })
  .describe('The QEMU that produced the snapshot.');
export type QemuInfo = z.infer<typeof QemuInfoSchema>;

export const FrozenDiskSchema = z
  .object({
    device: z.string().max(256).describe("The drive's BlockBackend name, qdev path or node name in QEMU."),
    base: z.string().max(4096).describe('The image that holds this disk as it was when the RAM was captured; never written again while the snapshot exists.'),
    baseFormat: z.string().max(32).describe('Format of the base image (raw, qcow2).'),
    virtualSize: byteCount('Virtual size of the disk in bytes.'),
    overlay: z
      .string()
      .max(4096)
      .optional()
      .describe('The qcow2 overlay the VM went on writing to after the save (absent when it stopped after the save).'),
  })
  .describe('A disk frozen with the RAM: a restore starts the VM on a fresh overlay of its base.');
export type FrozenDisk = z.infer<typeof FrozenDiskSchema>;

export const SnapshotDigestsInfoSchema = z
  .object({
    path: z.string().max(4096).describe('The sidecar file with the digests, next to the snapshot file.'),
    algorithm: z.string().max(32).describe('Digest algorithm (sha256 or crc32).'),
  })
  .describe('The RAM digests recorded after the save (spec.digests): a VMRestore with verify: Digests checks the pages against them.');

/** Largest recorded pod spec, serialised: far below an object's 1.5 MiB limit in etcd. */
export const RECORDED_POD_SPEC_MAX_BYTES = 256 * 1024;

export const RecordedVMPodSchema = z
  .object({
    name: z.string().max(253).describe('The pod the VM ran in when it was saved.'),
    uid: z.string().max(64).describe("That pod's metadata.uid."),
    labels: z.record(z.string().max(317), z.string().max(63)).optional().describe("The pod's labels, without those of the controllers that made it."),
    annotations: z.record(z.string().max(317), z.string().max(65536)).optional().describe("The pod's annotations, without kubectl's last-applied-configuration."),
    spec: z
      .record(z.string(), z.unknown())
      .describe(
        "The pod's spec, sanitised: no nodeName, no ephemeral containers, no service-account token volume the API server added, no priority the admission computed. A copy (spec.targetVMName) or a wake whose pod is gone runs in a new pod made from it.",
      )
      .meta({ 'x-kubernetes-preserve-unknown-fields': true }),
  })
  .describe(
    'The VM pod the snapshot was taken of, recorded by the operator when it assigned the save: what the new pod of a copy, or of a wake whose pod is gone, is made from (in the VMRestore\'s namespace, named after the target VM, pinned to status.nodeName). ' +
      `Kept in status rather than in an object of its own: a VM pod's spec is a few KiB (at most ${RECORDED_POD_SPEC_MAX_BYTES / 1024} KiB is recorded, far below an object's 1.5 MiB), only the operator writes it (tenants cannot write status), and it lives and goes with its VMSnapshot with no further RBAC or garbage collection.`,
  );
export type RecordedVMPod = z.infer<typeof RecordedVMPodSchema>;

export const LiveCaptureStatusSchema = z
  .object({
    convergence: ConvergenceSchema.describe(
      'How QEMU was made to finish the copy however fast the guest dirties memory: DirtyLimit (KVM dirty ring: only the vCPUs that dirty memory fast are slowed), AutoConverge (every vCPU is throttled in steps while the copy does not converge), None (the QEMU offered neither).',
    ),
    reason: z.string().max(1024).optional().describe('Why this method: what the QEMU and its accelerator offered.'),
    downtimeLimitMs: milliseconds("The final pause QEMU was asked to stay under (its downtime-limit), in milliseconds; vmPausedMs is what it took."),
    qemuDowntimeMs: milliseconds(
      "QEMU's downtime, in milliseconds: from stopping the VM to the end of the copy. vmPausedMs adds the wait until the VM was resumed.",
    ).optional(),
    cpuThrottlePeakPercent: z
      .number()
      .int()
      .min(0)
      .max(100)
      .optional()
      .describe('AutoConverge: the highest vCPU throttle QEMU applied during the copy (0: the copy converged without slowing the guest).'),
  })
  .describe('captureMode Live only: how the copy was brought to its final pause.');
export type LiveCaptureStatus = z.infer<typeof LiveCaptureStatusSchema>;

export const VMSnapshotStatusSchema = z
  .object({
    phase: PhaseSchema.describe('Pending, InProgress, Succeeded or Failed.').optional(),
    conditions: conditionsField().optional(),
    observedGeneration: z.number().int().min(0).optional().describe('The metadata.generation this status reflects.').meta({ format: 'int64' }),
    nodeName: z.string().max(253).optional().describe('The node whose agent does the work (where the VM runs).'),
    readyToUse: z.boolean().optional().describe('True once the file is complete and synced; a VMRestore can use it.'),
    restoreSize: byteCount('Guest RAM size in bytes.').optional(),
    restoreSizeHuman: z.string().max(32).optional().describe('restoreSize for display, e.g. "4Gi".'),
    progress: ProgressSchema.optional(),
    startTime: timestamp('When the save started.').optional(),
    completionTime: timestamp('When the save finished (successfully or not).').optional(),
    durationMs: milliseconds('Save duration in milliseconds.').optional(),
    durationHuman: z.string().max(32).optional().describe('durationMs for display, e.g. "12.3s".'),
    vmPausedMs: milliseconds('How long the VM was paused by the save, in milliseconds.').optional(),
    throughputMiBps: z.number().min(0).optional().describe('Average save throughput in MiB/s.'),
    throughputHuman: z.string().max(32).optional().describe('throughputMiBps for display, e.g. "1.8GiB/s".'),
    directIOUsed: z.boolean().optional().describe('Whether O_DIRECT was actually used for the RAM pages.'),
    directIOReason: z.string().max(1024).optional().describe('Why direct I/O was or was not used (e.g. the filesystem refused O_DIRECT).'),
    effective: EffectiveSnapshotSpecSchema.optional(),
    capture: LiveCaptureStatusSchema.optional(),
    file: SnapshotFileSchema.optional(),
    qemu: QemuInfoSchema.optional(),
    error: ErrorInfoSchema.optional(),
    hibernated: z
      .boolean()
      .optional()
      .describe(
        `True while this snapshot holds the only state of a VM it stopped (afterSnapshot: Stop) that has not run since; false once the VM runs again. While true, deleting the VMSnapshot with deletionPolicy Delete is refused unless it is annotated ${'vmsnap.io/allow-discard-hibernation'}: "true".`,
      ),
    fileDeleted: z.boolean().optional().describe('Set by the agent once it has removed the file of a deleted VMSnapshot (deletionPolicy Delete).'),
    disks: z.array(FrozenDiskSchema).max(64).optional().describe("The VM's writable disks, frozen at the instant its RAM was captured (absent for a VM without writable disks)."),
    digests: SnapshotDigestsInfoSchema.optional(),
    vmPod: RecordedVMPodSchema.optional(),
    upload: UploadStatusSchema.optional(),
  })
  .describe('Observed state, written by the operator and the node agent.')
  .meta(validations(terminalPhaseRule(VMSNAPSHOT_KIND)));
export type VMSnapshotStatus = z.infer<typeof VMSnapshotStatusSchema>;

export const VMSnapshotSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(VMSNAPSHOT_KIND),
  metadata: ObjectMetaSchema,
  spec: VMSnapshotSpecSchema,
  status: VMSnapshotStatusSchema.optional(),
});
export type VMSnapshot = z.infer<typeof VMSnapshotSchema>;
export type VMSnapshotInput = z.input<typeof VMSnapshotSchema>;
