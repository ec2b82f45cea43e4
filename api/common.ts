// Building blocks shared by every vmsnap.io resource: identity constants, enums, name and
// duration rules, conditions. Each schema carries the Kubernetes-facing metadata
// (descriptions, CEL rules) so the CRDs in crds/ can be generated from it.
import { z } from 'zod';
import { CONVERGENCE_METHODS } from './capture.js';

export const GROUP = 'vmsnap.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** Marks the VMSnapshotClass used when a VMSnapshot names none (value "true"). */
export const DEFAULT_CLASS_ANNOTATION = 'vmsnap.io/is-default-class';
/** Finalizer the operator puts on VMSnapshots so their files are handled by deletionPolicy. */
export const SNAPSHOT_FINALIZER = 'vmsnap.io/snapshot-file';
/**
 * Deleting a VMSnapshot that holds a hibernated VM's only state (status.hibernated, deletionPolicy
 * Delete) is refused unless it carries this annotation with the value "true".
 */
export const ALLOW_DISCARD_HIBERNATION_ANNOTATION = 'vmsnap.io/allow-discard-hibernation';
/** Default name of the operator's leader-election Lease (in its own namespace). */
export const LEADER_ELECTION_LEASE = 'vmsnap-operator';

/** `kubectl get vmsnap` lists every vmsnap.io resource. */
export const CATEGORY = 'vmsnap';

/**
 * Revision of the CRDs' schemas, written on each CRD as CRD_REVISION_ANNOTATION. The operator
 * refuses to start against CRDs of a lower revision (Helm installs crds/ once and never upgrades
 * them; an old schema would prune fields it writes). Bump it when a CRD gains something the
 * operator or agent relies on. CRDs without the annotation are revision 1.
 */
export const CRD_REVISION = 4;
export const CRD_REVISION_ANNOTATION = 'vmsnap.io/crd-revision';

export interface ResourceNames {
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  namespaced: boolean;
}

export const VMSNAPSHOT_KIND = 'VMSnapshot';
export const VMSNAPSHOT_PLURAL = 'vmsnapshots';
export const VMRESTORE_KIND = 'VMRestore';
export const VMRESTORE_PLURAL = 'vmrestores';
export const VMSNAPSHOTCLASS_KIND = 'VMSnapshotClass';
export const VMSNAPSHOTCLASS_PLURAL = 'vmsnapshotclasses';
export const VMSNAPSHOTSCHEDULE_KIND = 'VMSnapshotSchedule';
export const VMSNAPSHOTSCHEDULE_PLURAL = 'vmsnapshotschedules';
export const VMINVENTORY_KIND = 'VMInventory';
export const VMINVENTORY_PLURAL = 'vminventories';

// Short names are "vms" + the resource's initial: KubeVirt, which users run beside vmsnap, owns
// vm/vms, vmsnapshot(s), vmrestore(s) and more (see KUBEVIRT_NAMES in crds.test.ts).
export const RESOURCES = {
  vmSnapshot: {
    kind: VMSNAPSHOT_KIND,
    listKind: 'VMSnapshotList',
    plural: VMSNAPSHOT_PLURAL,
    singular: 'vmsnapshot',
    shortNames: ['vmss'],
    namespaced: true,
  },
  vmRestore: {
    kind: VMRESTORE_KIND,
    listKind: 'VMRestoreList',
    plural: VMRESTORE_PLURAL,
    singular: 'vmrestore',
    shortNames: ['vmsr'],
    namespaced: true,
  },
  vmSnapshotClass: {
    kind: VMSNAPSHOTCLASS_KIND,
    listKind: 'VMSnapshotClassList',
    plural: VMSNAPSHOTCLASS_PLURAL,
    singular: 'vmsnapshotclass',
    shortNames: ['vmsc'],
    namespaced: false,
  },
  vmSnapshotSchedule: {
    kind: VMSNAPSHOTSCHEDULE_KIND,
    listKind: 'VMSnapshotScheduleList',
    plural: VMSNAPSHOTSCHEDULE_PLURAL,
    singular: 'vmsnapshotschedule',
    shortNames: ['vmsched'],
    namespaced: true,
  },
  vmInventory: {
    kind: VMINVENTORY_KIND,
    listKind: 'VMInventoryList',
    plural: VMINVENTORY_PLURAL,
    singular: 'vminventory',
    shortNames: ['vminv'],
    namespaced: false,
  },
} as const satisfies Record<string, ResourceNames>;

// ---- names ------------------------------------------------------------------------------

export const DNS1123_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
export const DNS1123_LABEL_MAX = 63;
export const DNS1123_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
export const DNS1123_SUBDOMAIN_MAX = 253;

/** A DNS-1123 label (VM names: they are also path components on the node). */
export function dns1123Label(field: string) {
  return z
    .string({ error: `${field} is required and must be a string` })
    .min(1, { error: `${field} must not be empty` })
    .max(DNS1123_LABEL_MAX, { error: `${field} must be at most ${DNS1123_LABEL_MAX} characters` })
    .regex(new RegExp(DNS1123_LABEL_PATTERN), {
      error: `${field} must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit`,
    });
}

/** A DNS-1123 subdomain: what Kubernetes accepts as the name of a custom object. */
export function dns1123Subdomain(field: string) {
  return z
    .string({ error: `${field} is required and must be a string` })
    .min(1, { error: `${field} must not be empty` })
    .max(DNS1123_SUBDOMAIN_MAX, { error: `${field} must be at most ${DNS1123_SUBDOMAIN_MAX} characters` })
    .regex(new RegExp(DNS1123_SUBDOMAIN_PATTERN), {
      error: `${field} must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit`,
    });
}

// ---- durations (Go syntax, as in kubectl and CEL's duration()) ----------------------------

// No sign and no 'µs': what remains is accepted identically by Go, CEL and parseDurationMs.
export const GO_DURATION_PATTERN = '^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$';
const DURATION_PART = /([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)/g;
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a Go duration ("90s", "10m", "1h30m", "1.5h") into milliseconds; throws when malformed. */
export function parseDurationMs(text: string): number {
  if (!new RegExp(GO_DURATION_PATTERN).test(text)) {
    throw new Error(`invalid duration "${text}": use Go syntax such as "90s", "10m" or "1h30m"`);
  }
  let ms = 0;
  for (const m of text.matchAll(DURATION_PART)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms;
}

export function goDuration(field: string, bounds: { min: string; max: string }, extraRules: ValidationRule[] = []) {
  const minMs = parseDurationMs(bounds.min);
  const maxMs = parseDurationMs(bounds.max);
  return z
    .string({ error: `${field} must be a duration string such as "10m"` })
    .max(32, { error: `${field} must be at most 32 characters` })
    .regex(new RegExp(GO_DURATION_PATTERN), {
      error: `${field} must be a Go duration such as "90s", "10m" or "1h30m"`,
    })
    .refine(
      (s) => {
        if (!new RegExp(GO_DURATION_PATTERN).test(s)) return true; // the regex check reports it
        const ms = parseDurationMs(s);
        return ms >= minMs && ms <= maxMs;
      },
      { error: `${field} must be between ${bounds.min} and ${bounds.max}` },
    )
    .meta({
      'x-kubernetes-validations': [
        {
          // Guarded so a malformed value is reported once, by the pattern, not also as a CEL error.
          rule: `!self.matches('${GO_DURATION_PATTERN.replace(/\\/g, '\\\\')}') || (duration(self) >= duration('${bounds.min}') && duration(self) <= duration('${bounds.max}'))`,
          message: `${field} must be between ${bounds.min} and ${bounds.max}`,
        },
        ...extraRules,
      ],
    });
}

// ---- enums ------------------------------------------------------------------------------
// Each enum is exported as a schema, a value object (DirectIO.Auto) and a type.

export const DirectIOSchema = z.enum(['Auto', 'Always', 'Never']);
export const DirectIO = DirectIOSchema.enum;
export type DirectIO = z.infer<typeof DirectIOSchema>;

export const CaptureModeSchema = z.enum(['Paused', 'Live']);
export const CaptureMode = CaptureModeSchema.enum;
export type CaptureMode = z.infer<typeof CaptureModeSchema>;

/**
 * How QEMU is made to finish a live capture whatever the guest does: DirtyLimit (KVM's dirty ring: only the
 * vCPUs that dirty memory fast are slowed), AutoConverge (every vCPU is throttled in steps while the copy does
 * not converge), None (this QEMU offers neither). agent/src/engine/convergence.ts decides.
 */
export const ConvergenceSchema = z.enum(CONVERGENCE_METHODS);
export const Convergence = ConvergenceSchema.enum;
export type Convergence = z.infer<typeof ConvergenceSchema>;

export const AfterSnapshotSchema = z.enum(['Resume', 'Stop']);
export const AfterSnapshot = AfterSnapshotSchema.enum;
export type AfterSnapshot = z.infer<typeof AfterSnapshotSchema>;

export const DeletionPolicySchema = z.enum(['Delete', 'Retain']);
export const DeletionPolicy = DeletionPolicySchema.enum;
export type DeletionPolicy = z.infer<typeof DeletionPolicySchema>;

export const IfRunningSchema = z.enum(['Fail', 'Replace']);
export const IfRunning = IfRunningSchema.enum;
export type IfRunning = z.infer<typeof IfRunningSchema>;

export const AfterRestoreSchema = z.enum(['Running', 'Paused']);
export const AfterRestore = AfterRestoreSchema.enum;
export type AfterRestore = z.infer<typeof AfterRestoreSchema>;

export const RestoreModeSchema = z.enum(['Eager', 'Lazy']);
export const RestoreMode = RestoreModeSchema.enum;
export type RestoreMode = z.infer<typeof RestoreModeSchema>;

export const PhaseSchema = z.enum(['Pending', 'InProgress', 'Succeeded', 'Failed']);
export const Phase = PhaseSchema.enum;
export type Phase = z.infer<typeof PhaseSchema>;

export const ConditionStatusSchema = z.enum(['True', 'False', 'Unknown']);
export const ConditionStatus = ConditionStatusSchema.enum;
export type ConditionStatus = z.infer<typeof ConditionStatusSchema>;

/**
 * Condition types on VMSnapshot and VMRestore, all three present once the operator has seen an
 * object: Ready (True once the work succeeded), Progressing (True while waiting or running) and
 * Failed (True once it failed for good), so `kubectl wait --for=condition=Failed` returns at once.
 */
export const ConditionTypeSchema = z.enum(['Ready', 'Progressing', 'Failed']);
export const ConditionType = ConditionTypeSchema.enum;
export type ConditionType = z.infer<typeof ConditionTypeSchema>;

/**
 * Enums that replaced booleans: `true` and `false` are still read (as the values below) until the
 * next API version, so manifests written for the boolean keep working; vmsnap itself writes and
 * reports only the enum (status.effective shows what is in force).
 */
export const DigestsSchema = z.enum(['None', 'Record']);
export const Digests = DigestsSchema.enum;
export type Digests = z.infer<typeof DigestsSchema>;

export const VerifySchema = z.enum(['None', 'Digests']);
export const Verify = VerifySchema.enum;
export type Verify = z.infer<typeof VerifySchema>;

export const PrefetchSchema = z.enum(['None', 'Background']);
export const Prefetch = PrefetchSchema.enum;
export type Prefetch = z.infer<typeof PrefetchSchema>;

/** Marks an enum field that still reads the boolean it replaced (crd.ts writes its schema). */
export const LEGACY_BOOLEAN_KEY = 'x-vmsnap-legacy-boolean';

export function enumWithLegacyBoolean<E extends z.ZodEnum>(field: string, schema: E, legacy: { true: z.infer<E>; false: z.infer<E> }) {
  const values = schema.options as string[];
  const error = `${field} must be one of ${values.join(', ')} (true and false are read as ${legacy.true} and ${legacy.false})`;
  return z
    .union([z.boolean(), schema], { error })
    .transform((v): z.infer<E> => (typeof v === 'boolean' ? (v ? legacy.true : legacy.false) : (v as z.infer<E>)))
    .meta({ [LEGACY_BOOLEAN_KEY]: { values: [...values], true: legacy.true, false: legacy.false } });
}

// ---- built-in defaults (used when neither the object nor its class says) ---------------------

export const MIN_CHANNELS = 1;
export const MAX_CHANNELS = 64;
export const DEFAULT_CHANNELS = 4;
export const DEFAULT_DIRECT_IO: DirectIO = 'Auto';
export const DEFAULT_CAPTURE_MODE: CaptureMode = 'Paused';
export const DEFAULT_AFTER_SNAPSHOT: AfterSnapshot = 'Resume';
export const DEFAULT_FAILURE_DEADLINE = '10m';
export const FAILURE_DEADLINE_MIN = '1s';
export const FAILURE_DEADLINE_MAX = '168h';
export const DEFAULT_DELETION_POLICY: DeletionPolicy = 'Delete';
export const DEFAULT_IF_RUNNING: IfRunning = 'Fail';
export const DEFAULT_AFTER_RESTORE: AfterRestore = 'Running';
export const DEFAULT_RESTORE_MODE: RestoreMode = 'Eager';

// ---- shared field schemas ---------------------------------------------------------------------

export const ParallelismSchema = z
  .object({
    channels: z
      .number({ error: 'parallelism.channels must be a number' })
      .int({ error: 'parallelism.channels must be an integer' })
      .min(MIN_CHANNELS, { error: `parallelism.channels must be at least ${MIN_CHANNELS}` })
      .max(MAX_CHANNELS, { error: `parallelism.channels must be at most ${MAX_CHANNELS}` })
      .describe(`Number of multifd channels (QEMU threads and file streams), ${MIN_CHANNELS}..${MAX_CHANNELS}.`),
  })
  .describe('How many parallel channels QEMU uses to move RAM.');
export type Parallelism = z.infer<typeof ParallelismSchema>;

export const directIOField = () =>
  DirectIOSchema.describe(
    'O_DIRECT for the RAM pages: Auto probes the filesystem and falls back to buffered I/O with a recorded reason; Always fails when O_DIRECT is unsupported; Never uses the page cache.',
  );

export const DIGESTS_DOC =
  'Record: after the save (VM already resumed, not counted in the save time) hash the RAM pages into a sidecar file, so that a VMRestore with verify: Digests can refuse damaged pages. None: no digests. The booleans true and false are still read as Record and None.';
export const digestsField = () => enumWithLegacyBoolean('digests', DigestsSchema, { true: Digests.Record, false: Digests.None });

export const deletionPolicyField = () =>
  DeletionPolicySchema.describe(
    'What happens to the snapshot file when the VMSnapshot is deleted: Delete removes it, Retain keeps it on the node.',
  );

const timestamp = (description: string) => z.iso.datetime({ offset: true }).describe(description);
export { timestamp };

export const byteCount = (description: string) =>
  z.number().int().min(0).describe(description).meta({ format: 'int64' });

export const milliseconds = (description: string) =>
  z.number().int().min(0).describe(description).meta({ format: 'int64' });

/** metav1.Condition, as Kubernetes tooling (kubectl wait --for=condition=Ready) expects it. */
export const ConditionSchema = z.object({
  type: z.string().min(1).max(316).describe('Condition type, e.g. Ready.'),
  status: ConditionStatusSchema.describe('True, False or Unknown.'),
  observedGeneration: z.number().int().min(0).optional().describe('metadata.generation the condition was set for.').meta({ format: 'int64' }),
  lastTransitionTime: timestamp('When the condition last changed status.'),
  reason: z
    .string()
    .min(1)
    .max(1024)
    .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/)
    .describe('CamelCase reason for the last transition.'),
  message: z.string().max(32768).optional().describe('Human-readable detail.'),
});
export type Condition = z.infer<typeof ConditionSchema>;

export const conditionsField = () =>
  z
    .array(ConditionSchema)
    .max(16)
    .describe('Current state as standard conditions: Ready (True once the work succeeded), Progressing (True while it waits or runs; the reason says for what), Failed (True once it failed for good).')
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] });

export const ErrorInfoSchema = z
  .object({
    time: timestamp('When the error happened.'),
    message: z.string().max(4096).describe('What went wrong and what to do about it.'),
  })
  .describe('The last error.');
export type ErrorInfo = z.infer<typeof ErrorInfoSchema>;

export const ProgressSchema = z
  .object({
    bytesDone: byteCount('Bytes of guest RAM transferred so far.'),
    bytesTotal: byteCount('Bytes of guest RAM to transfer.'),
    percent: z.number().min(0).max(100).describe('bytesDone / bytesTotal in percent.'),
  })
  .describe('Transfer progress, updated while the work runs.');
export type Progress = z.infer<typeof ProgressSchema>;

/** Only the metadata fields vmsnap reads; everything else passes through untouched. */
export const ObjectMetaSchema = z.looseObject({
  name: z.string().optional(),
  generateName: z.string().optional(),
  namespace: z.string().optional(),
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  generation: z.number().int().optional(),
  creationTimestamp: z.union([z.string(), z.date()]).optional(),
  deletionTimestamp: z.union([z.string(), z.date()]).optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  finalizers: z.array(z.string()).optional(),
});
export type ObjectMeta = z.infer<typeof ObjectMetaSchema>;

/** One line per problem, each naming the field: "spec.parallelism.channels: ... at most 64". */
export function formatZodError(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[');
      return path ? `${path}: ${issue.message}` : issue.message;
    })
    .join('; ');
}

/** spec.failureDeadline, the same spelling, bounds and default on VMSnapshot and VMRestore. */
export const failureDeadlineField = (work: string) =>
  goDuration('failureDeadline', { min: FAILURE_DEADLINE_MIN, max: FAILURE_DEADLINE_MAX }, [immutableRule('failureDeadline')])
    .describe(
      `How long the ${work} may take, waiting for a missing VM, class or snapshot included, before it is marked Failed (Go duration: "90s", "10m", "1h30m"). Immutable.`,
    )
    .default(DEFAULT_FAILURE_DEADLINE);

// ---- CEL immutability rules -----------------------------------------------------------------

export interface ValidationRule {
  rule: string;
  message: string;
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

/** On the field itself: only evaluated when the field exists before and after the update. */
export function immutableRule(field: string): ValidationRule {
  return { rule: 'self == oldSelf', message: `${field} is immutable`, reason: 'FieldValueForbidden' };
}

/** On the parent object, so that adding or removing an optional field is refused too. */
export function immutableOptionalRule(field: string): ValidationRule {
  return {
    rule: `has(self.${field}) == has(oldSelf.${field}) && (!has(self.${field}) || self.${field} == oldSelf.${field})`,
    message: `${field} is immutable (it cannot be added, changed or removed after creation)`,
    fieldPath: `.${field}`,
    reason: 'FieldValueForbidden',
  };
}

export const validations = (...rules: ValidationRule[]) => ({ 'x-kubernetes-validations': rules });

/** Phases nothing may leave: the work is over, and its outcome is what the user saw. */
export const TERMINAL_PHASES: readonly Phase[] = [Phase.Succeeded, Phase.Failed];

/**
 * On the status object: once the phase is terminal it stays. The API server enforces it, so a
 * late write (an agent's Succeeded that outlived the API server's outage and the operator's
 * deadline Failed) is refused instead of silently changing the outcome.
 */
export function terminalPhaseRule(kind: string): ValidationRule {
  const terminal = TERMINAL_PHASES.map((p) => `'${p}'`).join(', ');
  return {
    rule: `!has(oldSelf.phase) || !(oldSelf.phase in [${terminal}]) || (has(self.phase) && self.phase == oldSelf.phase)`,
    message: `phase ${TERMINAL_PHASES.join(' and ')} are final: a finished ${kind} keeps its outcome (create a new ${kind} to try again)`,
    fieldPath: '.phase',
    reason: 'FieldValueForbidden',
  };
}
