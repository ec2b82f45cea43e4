// VMSnapshotSchedule: VMSnapshots of selected VMs on a cron schedule, with retention. The
// operator creates the snapshots (owned by the schedule, labelled vmsnap.io/schedule) and deletes
// the ones retention no longer keeps, through the normal VMSnapshot deletion path.
import { Cron } from 'croner';
import { z } from 'zod';
import {
  API_VERSION,
  ObjectMetaSchema,
  VMSNAPSHOTSCHEDULE_KIND,
  conditionsField,
  dns1123Label,
  goDuration,
  timestamp,
} from './common.js';
import { VMSnapshotSpecSchema } from './vmsnapshot.js';

/** Label on the VMSnapshots a schedule creates: the schedule's name. */
export const SCHEDULE_LABEL = 'vmsnap.io/schedule';
/** Annotation on those VMSnapshots: the scheduled time they were taken for (RFC 3339). */
export const SCHEDULED_TIME_ANNOTATION = 'vmsnap.io/scheduled-time';
/** A schedule's name is the value of SCHEDULE_LABEL: a label value's limit. */
export const SCHEDULE_NAME_MAX = 63;

export const ConcurrencyPolicySchema = z.enum(['Forbid', 'Allow', 'Replace']);
export const ConcurrencyPolicy = ConcurrencyPolicySchema.enum;
export type ConcurrencyPolicy = z.infer<typeof ConcurrencyPolicySchema>;
export const DEFAULT_CONCURRENCY_POLICY: ConcurrencyPolicy = 'Forbid';

export const SCHEDULE_MAX_LENGTH = 128;
export const TIME_ZONE_MAX_LENGTH = 64;
export const RETENTION_MAX_AGE_MIN = '1s';
export const RETENTION_MAX_AGE_MAX = '87600h';
export const KEEP_LAST_MAX = 1000;
export const DEFAULT_KEEP_FAILED = 1;

/**
 * The cron expression as the operator runs it: 5 fields (minute precision), 6 (a leading
 * seconds field) or a nickname (@hourly, @daily, @weekly, @monthly, @yearly). Throws a message
 * naming the field when the expression or the time zone is not valid.
 */
export function compileSchedule(schedule: string, timeZone?: string): Cron {
  let cron: Cron;
  try {
    cron = new Cron(schedule, { paused: true, timezone: timeZone, mode: '5-or-6-parts' });
  } catch (err) {
    throw new Error(`schedule "${schedule}" is not a cron expression: ${(err as Error).message}`);
  }
  try {
    cron.nextRun(new Date(0));
  } catch {
    throw new Error(`timeZone "${timeZone}" is not an IANA time zone name (such as "Europe/Berlin" or "UTC")`);
  }
  return cron;
}

const cronField = z
  .string({ error: 'schedule is required and must be a cron expression such as "0 3 * * *"' })
  .min(1, { error: 'schedule must not be empty' })
  .max(SCHEDULE_MAX_LENGTH, { error: `schedule must be at most ${SCHEDULE_MAX_LENGTH} characters` })
  // The API server checks the shape; the operator checks the fields (Condition InvalidSchedule).
  .regex(/^(@(yearly|annually|monthly|weekly|daily|hourly)|(\S+[ \t]+){4,5}\S+)$/, {
    error: 'schedule must be a cron expression of 5 fields ("0 3 * * *"), 6 with leading seconds ("*/10 * * * * *"), or @hourly, @daily, @weekly, @monthly, @yearly',
  })
  .superRefine((s, ctx) => {
    try {
      compileSchedule(s);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  });

const timeZoneField = z
  .string()
  .min(1)
  .max(TIME_ZONE_MAX_LENGTH, { error: `timeZone must be at most ${TIME_ZONE_MAX_LENGTH} characters` })
  .regex(/^[A-Za-z0-9_+\-/]+$/, { error: 'timeZone must be an IANA time zone name such as "Europe/Berlin" or "UTC"' })
  .superRefine((tz, ctx) => {
    try {
      compileSchedule('* * * * *', tz);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  });

export const LabelSelectorRequirementSchema = z.object({
  key: z.string().min(1).max(317).describe('The label key.'),
  operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']).describe('In, NotIn, Exists or DoesNotExist.'),
  values: z.array(z.string().max(63)).max(64).optional().describe('Values for In and NotIn; empty for Exists and DoesNotExist.'),
});
export type LabelSelectorRequirement = z.infer<typeof LabelSelectorRequirementSchema>;

export const LabelSelectorSchema = z
  .object({
    matchLabels: z.record(z.string().max(317), z.string().max(63)).optional().describe('Labels a VM pod must carry, all of them.'),
    matchExpressions: z.array(LabelSelectorRequirementSchema).max(32).optional().describe('Requirements a VM pod must meet, all of them.'),
  })
  .describe('A standard label selector.');
export type LabelSelector = z.infer<typeof LabelSelectorSchema>;

/** The VMSnapshot a schedule creates for each VM: everything but vmName, which the schedule fills in. */
export const SnapshotTemplateSchema = z
  .object({
    metadata: z
      .object({
        labels: z.record(z.string().max(317), z.string().max(63)).optional().describe('Labels copied onto each VMSnapshot.'),
        annotations: z.record(z.string().max(317), z.string().max(65536)).optional().describe('Annotations copied onto each VMSnapshot.'),
      })
      .optional()
      .describe('Labels and annotations of the VMSnapshots.'),
    spec: VMSnapshotSpecSchema.omit({ vmName: true })
      .describe('The VMSnapshot spec without vmName (class, channels, directIO, captureMode, afterSnapshot, failureDeadline, deletionPolicy).')
      .optional(),
  })
  .describe("What each VMSnapshot looks like; its spec.vmName is the VM's name.");
export type SnapshotTemplate = z.infer<typeof SnapshotTemplateSchema>;

export const RetentionSchema = z
  .object({
    keepLast: z
      .number()
      .int()
      .min(1, { error: 'retention.keepLast must be at least 1' })
      .max(KEEP_LAST_MAX, { error: `retention.keepLast must be at most ${KEEP_LAST_MAX}` })
      .describe('Keep this many Succeeded VMSnapshots per VM, the newest; older ones are deleted. Unset: no limit by count.')
      .optional(),
    maxAge: goDuration('retention.maxAge', { min: RETENTION_MAX_AGE_MIN, max: RETENTION_MAX_AGE_MAX })
      .describe('Delete finished VMSnapshots scheduled longer ago than this (Go duration: "36h", "720h"). Unset: no limit by age.')
      .optional(),
    keepFailed: z
      .number()
      .int()
      .min(0)
      .max(KEEP_LAST_MAX)
      .describe(`Keep this many Failed VMSnapshots per VM, the newest (their status says why). Default ${DEFAULT_KEEP_FAILED}.`)
      .default(DEFAULT_KEEP_FAILED),
  })
  .describe('Which of the VMSnapshots this schedule created are kept; the rest are deleted (deletionPolicy decides what happens to their files).');
export type Retention = z.infer<typeof RetentionSchema>;

const atLeastOneTargetRule = {
  rule: 'has(self.vmNames) || has(self.vmSelector)',
  message: 'set vmNames or vmSelector (or both): the VMs to snapshot',
  reason: 'FieldValueRequired' as const,
};

export const VMSnapshotScheduleSpecSchema = z
  .object({
    schedule: cronField.describe(
      'Cron expression in the schedule\'s timeZone: 5 fields ("0 3 * * *": 03:00 daily), 6 with leading seconds ("*/10 * * * * *"), or @hourly, @daily, @weekly, @monthly, @yearly.',
    ),
    timeZone: timeZoneField.describe('IANA time zone of the schedule ("Europe/Berlin"); default UTC.').optional(),
    vmNames: z
      .array(dns1123Label('vmNames[]'))
      .min(1)
      .max(256)
      .describe('VMs of this namespace to snapshot, by name (as VMSnapshot spec.vmName names them).')
      .optional(),
    vmSelector: LabelSelectorSchema.describe(
      'VM pods of this namespace to snapshot, by their labels: each matching pod labelled vmsnap.io/vm names a VM. An empty selector matches every VM pod.',
    ).optional(),
    template: SnapshotTemplateSchema.optional(),
    retention: RetentionSchema.optional(),
    suspend: z.boolean().describe('True: no new VMSnapshots are created (retention still applies). Default false.').default(false),
    concurrencyPolicy: ConcurrencyPolicySchema.describe(
      "When a VM's previous scheduled VMSnapshot has not finished at the next run: Forbid skips the run for that VM, Allow creates the new one anyway (it waits for the VM), Replace deletes the unfinished one (its save is cancelled) and creates the new one.",
    ).default(DEFAULT_CONCURRENCY_POLICY),
    startingDeadlineSeconds: z
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 3600)
      .describe(
        'A run missed while the operator was away is taken when it is found, if no later than this many seconds after its time; later, it is skipped (event MissedSchedule). Only the most recent missed run is ever taken. Unset: no limit.',
      )
      .meta({ format: 'int64' })
      .optional(),
  })
  .describe('When to snapshot which VMs, how, and how many snapshots to keep.')
  .meta({ 'x-kubernetes-validations': [atLeastOneTargetRule] });
export type VMSnapshotScheduleSpec = z.infer<typeof VMSnapshotScheduleSpecSchema>;
export type VMSnapshotScheduleSpecInput = z.input<typeof VMSnapshotScheduleSpecSchema>;

export const ActiveSnapshotSchema = z.object({
  name: z.string().max(253).describe('The VMSnapshot.'),
  vmName: z.string().max(63).describe('Its VM.'),
});

export const VMSnapshotScheduleStatusSchema = z
  .object({
    conditions: conditionsField().optional(),
    observedGeneration: z.number().int().min(0).optional().describe('The metadata.generation this status reflects.').meta({ format: 'int64' }),
    lastScheduleTime: timestamp('The scheduled time of the last run that created VMSnapshots.').optional(),
    nextScheduleTime: timestamp('The next scheduled run (absent while suspended or when the schedule is invalid).').optional(),
    lastSuccessfulTime: timestamp('When the newest Succeeded VMSnapshot of this schedule completed.').optional(),
    lastSuccessfulSnapshot: z.string().max(253).optional().describe('That VMSnapshot.'),
    lastMissedTime: timestamp('The last scheduled time skipped because it was found after startingDeadlineSeconds.').optional(),
    active: z.array(ActiveSnapshotSchema).max(1024).optional().describe('VMSnapshots of this schedule that have not finished.'),
    activeCount: z.number().int().min(0).optional().describe('How many VMSnapshots of this schedule have not finished.'),
    vmCount: z.number().int().min(0).optional().describe('How many VMs the schedule selected at its last run.'),
    snapshotCount: z.number().int().min(0).optional().describe('How many VMSnapshots of this schedule exist.'),
  })
  .describe('Observed state, written by the operator.');
export type VMSnapshotScheduleStatus = z.infer<typeof VMSnapshotScheduleStatusSchema>;

export const VMSnapshotScheduleSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(VMSNAPSHOTSCHEDULE_KIND),
  metadata: ObjectMetaSchema,
  spec: VMSnapshotScheduleSpecSchema,
  status: VMSnapshotScheduleStatusSchema.optional(),
});
export type VMSnapshotSchedule = z.infer<typeof VMSnapshotScheduleSchema>;
export type VMSnapshotScheduleInput = z.input<typeof VMSnapshotScheduleSchema>;
