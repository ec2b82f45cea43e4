// VMRestore: bring a VM back from a VMSnapshot (the same VM, or a copy under another name).
import { z } from 'zod';
import {
  API_VERSION,
  AfterRestoreSchema,
  DEFAULT_AFTER_RESTORE,
  DEFAULT_IF_RUNNING,
  DEFAULT_RESTORE_MODE,
  DirectIOSchema,
  ErrorInfoSchema,
  IfRunningSchema,
  MAX_CHANNELS,
  MIN_CHANNELS,
  ObjectMetaSchema,
  ParallelismSchema,
  PhaseSchema,
  ProgressSchema,
  RestoreModeSchema,
  VMRESTORE_KIND,
  byteCount,
  conditionsField,
  directIOField,
  enumWithLegacyBoolean,
  Prefetch,
  PrefetchSchema,
  Verify,
  VerifySchema,
  failureDeadlineField,
  dns1123Label,
  dns1123Subdomain,
  immutableOptionalRule,
  immutableRule,
  milliseconds,
  terminalPhaseRule,
  timestamp,
  validations,
  type ValidationRule,
} from './common.js';

const verifyField = () => enumWithLegacyBoolean('verify', VerifySchema, { true: Verify.Digests, false: Verify.None });
const prefetchField = () => enumWithLegacyBoolean('prefetch', PrefetchSchema, { true: Prefetch.Background, false: Prefetch.None });

// A lazy restore maps the file into guest RAM instead of reading it, so O_DIRECT cannot apply.
const LAZY_EXCLUDES_DIRECT_IO_MESSAGE =
  'directIO: Always cannot be combined with restoreMode: Lazy (a lazy restore maps the snapshot file instead of reading it); use Auto or Never';
const lazyExcludesDirectIORule: ValidationRule = {
  rule: "!(has(self.directIO) && self.directIO == 'Always' && has(self.restoreMode) && self.restoreMode == 'Lazy')",
  message: LAZY_EXCLUDES_DIRECT_IO_MESSAGE,
  fieldPath: '.directIO',
  reason: 'FieldValueInvalid',
};

const ONE_SOURCE_MESSAGE =
  'exactly one of snapshotName (a VMSnapshot) or latestSnapshotOf (a VM: its newest Succeeded VMSnapshot) must be set';
const oneSourceRule: ValidationRule = {
  rule: 'has(self.snapshotName) != has(self.latestSnapshotOf)',
  message: ONE_SOURCE_MESSAGE,
  fieldPath: '.snapshotName',
  reason: 'FieldValueRequired',
};

export const VMRestoreSpecSchema = z
  .object({
    snapshotName: dns1123Subdomain('snapshotName')
      .describe('The VMSnapshot to restore, in the same namespace; it must be readyToUse. Set this or latestSnapshotOf. Immutable.')
      .meta(validations(immutableRule('snapshotName')))
      .optional(),
    latestSnapshotOf: dns1123Label('latestSnapshotOf')
      .describe(
        'A VM of this namespace: restore its newest Succeeded VMSnapshot (by completionTime). The operator chooses once and records the choice in status.snapshotName; it waits, until the deadline, while the VM has none. Set this or snapshotName. Immutable.',
      )
      .optional(),
    targetVMName: dns1123Label('targetVMName')
      .describe("The VM to restore into. Defaults to the snapshot's VM; another name restores a copy. Immutable.")
      .optional(),
    parallelism: ParallelismSchema.optional(),
    directIO: directIOField().optional(),
    ifRunning: IfRunningSchema.describe(
      'When the target VM is running: Fail leaves it alone and fails the restore; Replace stops it and restores over it.',
    )
      .meta(validations(immutableRule('ifRunning')))
      .default(DEFAULT_IF_RUNNING),
    afterRestore: AfterRestoreSchema.describe('Running: resume the VM once restored. Paused: leave it paused.')
      .meta(validations(immutableRule('afterRestore')))
      .default(DEFAULT_AFTER_RESTORE),
    restoreMode: RestoreModeSchema.describe(
      'Eager: all RAM is read before the VM runs. Lazy: the VM runs at once with its RAM mapped (private, copy-on-write) from the snapshot file, paging in on demand; the file is never modified, and deleting its VMSnapshot frees the space when the last VM using it exits. Falls back to Eager, with status.restoreModeReason, for VMs whose RAM cannot be mapped.',
    )
      .meta(validations(immutableRule('restoreMode')))
      .default(DEFAULT_RESTORE_MODE),
    verify: verifyField()
      .describe(
        "Digests: check the snapshot's RAM pages against the digests taken after the save (VMSnapshot spec.digests: Record) before QEMU loads anything; damaged pages, or a snapshot without digests, fail the restore. Costs one read of the file. None (default): no check. The booleans true and false are still read as Digests and None. Immutable.",
      )
      .optional(),
    failureDeadline: failureDeadlineField('restore'),
    nodeName: z
      .string()
      .max(253)
      .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, { error: 'nodeName must be a node name (a DNS-1123 subdomain)' })
      .describe(
        "Restore on this node. Without it the restore runs where its target VM is (the node of its live VM pods, or the node whose inventory has its QEMU up), else on the snapshot's node. On a node other than the snapshot's, its agent fetches the snapshot from the class's repository (the snapshot must be uploaded), verifies every part and restores from a local copy. Immutable.",
      )
      .optional(),
    prefetch: prefetchField()
      .describe(
        'restoreMode Lazy only: Background (default) reads the mapped RAM into the page cache in the background, so the guest warms up without waiting for each page fault; None pages in only on demand. The booleans true and false are still read as Background and None.',
      )
      .optional(),
  })
  .superRefine((spec, ctx) => {
    if ((spec.snapshotName === undefined) === (spec.latestSnapshotOf === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['snapshotName'], message: ONE_SOURCE_MESSAGE });
    }
    if (spec.restoreMode === 'Lazy' && spec.directIO === 'Always') {
      ctx.addIssue({ code: 'custom', path: ['directIO'], message: LAZY_EXCLUDES_DIRECT_IO_MESSAGE });
    }
  })
  .describe('Which snapshot to restore and how. Immutable: create a new VMRestore to restore again.')
  .meta(
    validations(
      oneSourceRule,
      immutableOptionalRule('latestSnapshotOf'),
      immutableOptionalRule('targetVMName'),
      immutableOptionalRule('parallelism'),
      immutableOptionalRule('directIO'),
      immutableOptionalRule('nodeName'),
      lazyExcludesDirectIORule,
    ),
  );
export type VMRestoreSpec = z.infer<typeof VMRestoreSpecSchema>;
export type VMRestoreSpecInput = z.input<typeof VMRestoreSpecSchema>;

/** The restore settings after applying the snapshot's values and built-in defaults. */
export const EffectiveRestoreSpecSchema = z
  .object({
    snapshotName: z.string().max(253).describe('The VMSnapshot restored.'),
    sourceVMName: z.string().max(63).describe('The VM the snapshot was taken of.'),
    targetVMName: z.string().max(63).describe('The VM restored into.'),
    copy: z.boolean().describe('True when restoring into a VM other than the source.'),
    channels: z.number().int().min(MIN_CHANNELS).max(MAX_CHANNELS).describe('Multifd channels used.'),
    directIO: DirectIOSchema.describe('Requested direct I/O mode.'),
    ifRunning: IfRunningSchema.describe('Policy for a running target.'),
    afterRestore: AfterRestoreSchema.describe('State of the VM after the restore.'),
    restoreMode: RestoreModeSchema.describe('Eager or Lazy.'),
    prefetch: prefetchField().optional().describe('Lazy only: Background when the mapped RAM is prefetched in the background, else None.'),
    verify: verifyField().optional().describe("Digests when the RAM pages are checked against the snapshot's digests before loading, else None."),
    // Optional: statuses written before the field existed stay valid.
    failureDeadline: z.string().max(32).optional().describe('Deadline used.'),
  })
  .describe('The settings in force after applying the snapshot and built-in defaults.');
export type EffectiveRestoreSpec = z.infer<typeof EffectiveRestoreSpecSchema>;

export const LazyRestoreStatusSchema = z
  .object({
    file: z.string().max(4096).describe('The snapshot file the main RAM block is mapped from (read-only, copy-on-write).'),
    mappedBytes: byteCount('Size of the mapped main RAM block.'),
    residentBytes: byteCount('Bytes of the mapped RAM in the VM now: paged in from the file or written by the guest.').optional(),
    residentPercent: z.number().min(0).max(100).optional().describe('residentBytes as a percentage of mappedBytes.'),
    privateBytes: byteCount('Bytes the guest has written: private copies no longer backed by the file.').optional(),
    sharedBytes: byteCount('Resident bytes also mapped by other VMs restored from the same file.').optional(),
    vmRunning: z.boolean().optional().describe('False once the VM has exited: the file no longer backs it.'),
    measuredAt: timestamp('When the node agent last measured residency.').optional(),
  })
  .describe('A lazy restore: how much of the VM\'s RAM is resident, updated by the node agent while the VM runs.');
export type LazyRestoreStatus = z.infer<typeof LazyRestoreStatusSchema>;

export const VMRestoreStatusSchema = z
  .object({
    phase: PhaseSchema.describe('Pending, InProgress, Succeeded or Failed.').optional(),
    conditions: conditionsField().optional(),
    observedGeneration: z.number().int().min(0).optional().describe('The metadata.generation this status reflects.').meta({ format: 'int64' }),
    nodeName: z.string().max(253).optional().describe("The node whose agent does the work: spec.nodeName, else the node where the target VM is, else the snapshot's node; the Assigned event says why."),
    snapshotName: z
      .string()
      .max(253)
      .optional()
      .describe('spec.latestSnapshotOf only: the VMSnapshot the operator chose, once; the restore uses it even if a newer one appears.'),
    effective: EffectiveRestoreSpecSchema.optional(),
    progress: ProgressSchema.optional(),
    restoreSize: byteCount('Guest RAM size in bytes.').optional(),
    startTime: timestamp('When the restore started.').optional(),
    completionTime: timestamp('When the restore finished (successfully or not).').optional(),
    durationMs: milliseconds('Restore duration in milliseconds.').optional(),
    durationHuman: z.string().max(32).optional().describe('durationMs for display, e.g. "3.2s".'),
    downtimeMs: milliseconds('How long the VM was unavailable (from stop or pause until it runs again), in milliseconds.').optional(),
    downtimeHuman: z.string().max(32).optional().describe('downtimeMs for display.'),
    throughputMiBps: z.number().min(0).optional().describe('Average restore throughput in MiB/s (Eager mode).'),
    directIOUsed: z.boolean().optional().describe('Whether O_DIRECT was actually used for the RAM pages.'),
    directIOReason: z.string().max(1024).optional().describe('Why direct I/O was or was not used.'),
    restoreMode: RestoreModeSchema.optional().describe(
      'The mode the restore ran in: Lazy, or Eager (asked for, or the fallback when Lazy could not work: restoreModeReason says why).',
    ),
    restoreModeReason: z.string().max(1024).optional().describe('Why a Lazy restore ran Eager.'),
    lazy: LazyRestoreStatusSchema.optional(),
    pod: z
      .object({
        name: z.string().max(253).describe('Pod name (the target VM\'s name).'),
        uid: z.string().max(64).describe("The pod's metadata.uid: the agent restores only into this pod."),
      })
      .optional()
      .describe('The new pod the operator made for this restore (a copy, or a wake whose pod was gone), from the pod spec the VMSnapshot recorded.'),
    error: ErrorInfoSchema.optional(),
  })
  .describe('Observed state, written by the operator and the node agent.')
  .meta(validations(terminalPhaseRule(VMRESTORE_KIND)));
export type VMRestoreStatus = z.infer<typeof VMRestoreStatusSchema>;

export const VMRestoreSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(VMRESTORE_KIND),
  metadata: ObjectMetaSchema,
  spec: VMRestoreSpecSchema,
  status: VMRestoreStatusSchema.optional(),
});
export type VMRestore = z.infer<typeof VMRestoreSchema>;
export type VMRestoreInput = z.input<typeof VMRestoreSchema>;
