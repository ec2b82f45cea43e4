// Pure functions that turn what the user wrote (plus a class, plus built-in defaults) into the
// settings in force. The operator records the result in status.effective, so later edits to a
// class never change a snapshot that was already taken.
import {
  DEFAULT_AFTER_RESTORE,
  DEFAULT_AFTER_SNAPSHOT,
  DEFAULT_CAPTURE_MODE,
  DEFAULT_CHANNELS,
  DEFAULT_DELETION_POLICY,
  DEFAULT_DIRECT_IO,
  DEFAULT_FAILURE_DEADLINE,
  DEFAULT_IF_RUNNING,
  DEFAULT_RESTORE_MODE,
  Digests,
  Prefetch,
  RestoreMode,
  Verify,
  type DeletionPolicy,
} from './common.js';

// Inputs may still carry the booleans the enums replaced (objects not parsed through the schema).
const fromLegacy =
  <T extends string>(whenTrue: T, whenFalse: T) =>
  (v: T | boolean | undefined): T | undefined =>
    v === undefined ? undefined : typeof v === 'boolean' ? (v ? whenTrue : whenFalse) : v;
export const legacyDigests = fromLegacy<Digests>(Digests.Record, Digests.None);
export const legacyVerify = fromLegacy<Verify>(Verify.Digests, Verify.None);
export const legacyPrefetch = fromLegacy<Prefetch>(Prefetch.Background, Prefetch.None);
import type { EffectiveRestoreSpec, VMRestoreSpecInput } from './vmrestore.js';
import type { EffectiveSnapshotSpec, VMSnapshotSpecInput } from './vmsnapshot.js';
import { isDefaultClass, type VMSnapshotClass, type VMSnapshotClassFields } from './vmsnapshotclass.js';

export type ClassSelection =
  | { ok: true; class?: VMSnapshotClass; reason: string }
  | { ok: false; error: string };

/**
 * Picks the class for a snapshot: the named one (which must exist), else the default class,
 * else none (built-in defaults). With several default classes the newest wins, as for
 * StorageClasses, so adding a new default never needs a gap without one.
 */
export function selectSnapshotClass(className: string | undefined, classes: readonly VMSnapshotClass[]): ClassSelection {
  if (className) {
    const named = classes.find((c) => c.metadata.name === className);
    if (!named) {
      return {
        ok: false,
        error: `VMSnapshotClass "${className}" (spec.className) does not exist: create it or remove spec.className to use the default class`,
      };
    }
    return { ok: true, class: named, reason: `spec.className is "${className}"` };
  }
  const defaults = classes.filter(isDefaultClass).sort(newestFirst);
  const chosen = defaults[0];
  if (!chosen) return { ok: true, reason: 'no default VMSnapshotClass: built-in defaults apply' };
  const note = defaults.length > 1 ? ` (newest of ${defaults.length} default classes)` : '';
  return { ok: true, class: chosen, reason: `default VMSnapshotClass "${chosen.metadata.name}"${note}` };
}

function created(c: VMSnapshotClass): number {
  const t = c.metadata.creationTimestamp;
  const ms = t instanceof Date ? t.getTime() : t ? Date.parse(t) : NaN;
  return Number.isNaN(ms) ? 0 : ms;
}

function newestFirst(a: VMSnapshotClass, b: VMSnapshotClass): number {
  return created(b) - created(a) || (a.metadata.name ?? '').localeCompare(b.metadata.name ?? '');
}

/** Field by field: the snapshot's own value, else the class's, else the built-in default. */
export function effectiveSnapshotSpec(
  spec: VMSnapshotSpecInput,
  cls?: VMSnapshotClassFields & { metadata?: { name?: string } },
): EffectiveSnapshotSpec {
  const effective: EffectiveSnapshotSpec = {
    channels: spec.parallelism?.channels ?? cls?.parallelism?.channels ?? DEFAULT_CHANNELS,
    directIO: spec.directIO ?? cls?.directIO ?? DEFAULT_DIRECT_IO,
    captureMode: spec.captureMode ?? DEFAULT_CAPTURE_MODE,
    afterSnapshot: spec.afterSnapshot ?? DEFAULT_AFTER_SNAPSHOT,
    failureDeadline: spec.failureDeadline ?? DEFAULT_FAILURE_DEADLINE,
    deletionPolicy: spec.deletionPolicy ?? cls?.deletionPolicy ?? DEFAULT_DELETION_POLICY,
    digests: legacyDigests(spec.digests) ?? legacyDigests(cls?.digests) ?? Digests.None,
  };
  if (cls?.repository) effective.repository = cls.repository;
  const className = cls?.metadata?.name;
  return className ? { className, ...effective } : effective;
}

/** selectSnapshotClass + effectiveSnapshotSpec in one step. */
export function resolveSnapshotSpec(
  spec: VMSnapshotSpecInput,
  classes: readonly VMSnapshotClass[],
): { ok: true; effective: EffectiveSnapshotSpec; reason: string } | { ok: false; error: string } {
  const selection = selectSnapshotClass(spec.className, classes);
  if (!selection.ok) return selection;
  return { ok: true, effective: effectiveSnapshotSpec(spec, selection.class), reason: selection.reason };
}

/** The policy to apply when a VMSnapshot is deleted: an edited spec wins over what was recorded. */
export function effectiveDeletionPolicy(snapshot: {
  spec: Pick<VMSnapshotSpecInput, 'deletionPolicy'>;
  status?: { effective?: Pick<EffectiveSnapshotSpec, 'deletionPolicy'> };
}): DeletionPolicy {
  return snapshot.spec.deletionPolicy ?? snapshot.status?.effective?.deletionPolicy ?? DEFAULT_DELETION_POLICY;
}

/** Restore settings: the restore's own values, else the snapshot's (VM, channels), else built-ins. */
export function effectiveRestoreSpec(
  spec: VMRestoreSpecInput,
  snapshot: { metadata: { name?: string }; spec: { vmName: string }; status?: { effective?: Pick<EffectiveSnapshotSpec, 'channels'> } },
): EffectiveRestoreSpec {
  const sourceVMName = snapshot.spec.vmName;
  const targetVMName = spec.targetVMName ?? sourceVMName;
  return {
    snapshotName: snapshot.metadata.name ?? '',
    sourceVMName,
    targetVMName,
    copy: targetVMName !== sourceVMName,
    channels: spec.parallelism?.channels ?? snapshot.status?.effective?.channels ?? DEFAULT_CHANNELS,
    directIO: spec.directIO ?? DEFAULT_DIRECT_IO,
    ifRunning: spec.ifRunning ?? DEFAULT_IF_RUNNING,
    afterRestore: spec.afterRestore ?? DEFAULT_AFTER_RESTORE,
    restoreMode: spec.restoreMode ?? DEFAULT_RESTORE_MODE,
    failureDeadline: spec.failureDeadline ?? DEFAULT_FAILURE_DEADLINE,
    verify: legacyVerify(spec.verify) ?? Verify.None,
    ...((spec.restoreMode ?? DEFAULT_RESTORE_MODE) === RestoreMode.Lazy ? { prefetch: legacyPrefetch(spec.prefetch) ?? Prefetch.Background } : {}),
  };
}

/** Whether the save records RAM digests: status.effective (the class may set it), else the spec. */
export function snapshotDigests(snap: { spec: { digests?: Digests | boolean }; status?: { effective?: { digests?: Digests | boolean } } }): Digests {
  return legacyDigests(snap.status?.effective?.digests) ?? legacyDigests(snap.spec.digests) ?? Digests.None;
}

/** Whether the restore checks the digests first: status.effective, else the spec (statuses from before the field). */
export function restoreVerify(restore: { spec: { verify?: Verify | boolean }; status?: { effective?: { verify?: Verify | boolean } } }): Verify {
  return legacyVerify(restore.status?.effective?.verify) ?? legacyVerify(restore.spec.verify) ?? Verify.None;
}
