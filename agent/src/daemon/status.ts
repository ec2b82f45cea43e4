// Status patches the agent writes, as pure functions of the object, the
// outcome and the time. Merge patches: conditions are sent whole, computed
// from the object's current list so lastTransitionTime moves only on change.
import {
  AfterSnapshot,
  Phase,
  Reason,
  failedStatus as apiFailedStatus,
  formatBytes,
  formatDurationMs,
  phaseConditions,
  transferDisplay,
  type Condition,
  type FrozenDisk,
  type LazyRestoreStatus,
  type LiveCaptureStatus,
  type VMRestoreStatus,
  type VMSnapshotStatus,
} from '../../../api/index.js';

export interface StatusOwner {
  metadata: { generation?: number; resourceVersion?: string };
  status?: { conditions?: Condition[] };
}

/** A finished run's conditions: Ready True with the summary (Progressing and Failed False). */
const succeeded = (obj: StatusOwner, message: string, now: Date): Condition[] => phaseConditions(obj, Phase.Succeeded, Reason.Succeeded, message, now);

/** The claim: phase InProgress, guarded by the resourceVersion the agent saw (409 if it changed). */
export function claimPatch<S extends VMSnapshotStatus | VMRestoreStatus>(
  obj: StatusOwner,
  message: string,
  now: Date,
  extra: Partial<S> = {},
): { metadata: { resourceVersion?: string }; status: Partial<S> } {
  return {
    metadata: { resourceVersion: obj.metadata.resourceVersion },
    status: {
      phase: Phase.InProgress,
      startTime: now.toISOString(),
      observedGeneration: obj.metadata.generation,
      conditions: phaseConditions(obj, Phase.InProgress, Reason.InProgress, message, now),
      ...extra,
    } as Partial<S>,
  };
}

export function failedStatus(obj: StatusOwner, reason: Reason, message: string, now: Date): VMSnapshotStatus & VMRestoreStatus {
  return apiFailedStatus(obj, reason, message, now);
}

export function progressStatus(bytesDone: number, bytesTotal: number): { progress: { bytesDone: number; bytesTotal: number; percent: number } } {
  const done = Math.max(0, Math.round(bytesDone));
  const total = Math.max(0, Math.round(bytesTotal));
  const percent = total > 0 ? Math.min(100, Math.floor((1000 * done) / total) / 10) : 0;
  return { progress: { bytesDone: done, bytesTotal: total, percent } };
}

/** What a finished save reports, from saveVm's result or from a header completed during recovery. */
export interface SaveOutcome {
  path: string;
  /** Bytes QEMU wrote (what the throughput is computed from). */
  bytes: number;
  ramBytes: number;
  durationMs: number;
  vmPausedMs: number;
  directIO: boolean;
  directIOReason?: string;
  logicalBytes: number;
  allocatedBytes: number;
  qemu: { version: string; machine: string };
  /** The disks frozen with the RAM (the snapshot's metadata.disks). */
  disks?: FrozenDisk[];
  /** The RAM digests, when they were recorded (or why not). */
  digests?: { path: string; algorithm: string } | { error: string };
  /** Live saves: how QEMU was brought to the final pause. */
  capture?: LiveCaptureStatus;
}

export function snapshotSucceededStatus(obj: StatusOwner & { status?: { effective?: { afterSnapshot?: string } } }, r: SaveOutcome, now: Date, note = ''): VMSnapshotStatus {
  const durationMs = Math.max(0, Math.round(r.durationMs));
  const display = transferDisplay(r.bytes, durationMs);
  return {
    phase: Phase.Succeeded,
    readyToUse: true,
    restoreSize: r.ramBytes,
    restoreSizeHuman: formatBytes(r.ramBytes),
    completionTime: now.toISOString(),
    durationMs,
    durationHuman: display.durationHuman,
    vmPausedMs: Math.max(0, Math.round(r.vmPausedMs)),
    throughputMiBps: display.throughputMiBps,
    throughputHuman: display.throughputHuman,
    directIOUsed: r.directIO,
    ...(r.directIOReason ? { directIOReason: r.directIOReason.slice(0, 1024) } : {}),
    ...(r.capture ? { capture: { ...r.capture, ...(r.capture.reason ? { reason: r.capture.reason.slice(0, 1024) } : {}) } } : {}),
    file: { path: r.path, logicalBytes: r.logicalBytes, allocatedBytes: r.allocatedBytes },
    qemu: { version: r.qemu.version, machine: r.qemu.machine },
    ...(r.disks?.length ? { disks: r.disks.map(frozenDisk) } : {}),
    ...(r.digests && 'path' in r.digests ? { digests: { path: r.digests.path, algorithm: r.digests.algorithm } } : {}),
    ...progressStatus(r.ramBytes, r.ramBytes),
    // A hibernation: this file is now the VM's only state (the operator clears it once the VM runs again).
    ...(obj.status?.effective?.afterSnapshot === AfterSnapshot.Stop ? { hibernated: true } : {}),
    observedGeneration: obj.metadata.generation,
    conditions: succeeded(obj, saveSummary(r) + note, now),
  };
}

/** Only the fields the API publishes (the metadata record may carry more). */
function frozenDisk(d: FrozenDisk): FrozenDisk {
  return { device: d.device, base: d.base, baseFormat: d.baseFormat, virtualSize: d.virtualSize, ...(d.overlay ? { overlay: d.overlay } : {}) };
}

/** "saved 1GiB in 0.8s (1.3GiB/s) to /path" */
export function saveSummary(r: Pick<SaveOutcome, 'bytes' | 'durationMs' | 'path'>): string {
  const d = transferDisplay(r.bytes, r.durationMs);
  return `saved ${formatBytes(r.bytes)}B in ${d.durationHuman} (${d.throughputHuman}) to ${r.path}`;
}

export interface RestoreOutcome {
  path: string;
  bytes: number;
  ramBytes: number;
  /** Wall time of the whole restore (launch included). */
  durationMs: number;
  /** Time the QEMU spent loading the file (what the throughput is computed from). */
  loadMs: number;
  downtimeMs: number;
  directIO: boolean;
  directIOReason?: string;
  running: boolean;
  target: string;
  mode?: 'eager' | 'lazy';
  /** restoreMode Lazy asked for, Eager done: why. */
  lazyFallbackReason?: string;
  lazy?: LazyRestoreStatus;
}

export function restoreSucceededStatus(obj: StatusOwner, r: RestoreOutcome, now: Date, note = ''): VMRestoreStatus {
  return {
    phase: Phase.Succeeded,
    completionTime: now.toISOString(),
    ...restoreTimes(r.durationMs, r.downtimeMs),
    ...(r.mode === 'lazy' ? {} : { throughputMiBps: transferDisplay(r.bytes, r.loadMs).throughputMiBps }),
    restoreSize: r.ramBytes,
    ...lazyFields(r),
    directIOUsed: r.directIO,
    ...(r.directIOReason ? { directIOReason: r.directIOReason.slice(0, 1024) } : {}),
    ...progressStatus(r.bytes, r.bytes),
    observedGeneration: obj.metadata.generation,
    conditions: succeeded(obj, restoreSummary(r) + note, now),
  };
}

/** A restore's duration and downtime, whole milliseconds and for people. */
function restoreTimes(duration: number, downtime: number): Pick<VMRestoreStatus, 'durationMs' | 'durationHuman' | 'downtimeMs' | 'downtimeHuman'> {
  const durationMs = Math.max(0, Math.round(duration));
  const downtimeMs = Math.max(0, Math.round(downtime));
  return { durationMs, durationHuman: formatDurationMs(durationMs), downtimeMs, downtimeHuman: formatDurationMs(downtimeMs) };
}

function lazyFields(r: Pick<RestoreOutcome, 'mode' | 'lazyFallbackReason' | 'lazy'>): Pick<VMRestoreStatus, 'restoreMode' | 'restoreModeReason' | 'lazy'> {
  return {
    ...(r.mode ? { restoreMode: r.mode === 'lazy' ? 'Lazy' : 'Eager' } : {}),
    ...(r.lazyFallbackReason ? { restoreModeReason: r.lazyFallbackReason.slice(0, 1024) } : {}),
    ...(r.lazy ? { lazy: r.lazy } : {}),
  };
}

/** "restored 1GiB from /path in 0.9s (1.2GiB/s) into default/demo; VM running" */
export function restoreSummary(r: Pick<RestoreOutcome, 'bytes' | 'loadMs' | 'durationMs' | 'path' | 'target' | 'running' | 'lazy' | 'lazyFallbackReason'>): string {
  const load = transferDisplay(r.bytes, r.loadMs);
  if (r.lazy) {
    return (
      `restored ${r.target} lazily in ${formatDurationMs(r.durationMs)}: ${formatBytes(r.lazy.mappedBytes)}B of RAM mapped from ${r.path}, ` +
      `paging in on demand; VM ${r.running ? 'running' : 'paused'}`
    );
  }
  if (r.lazyFallbackReason) return `restored eagerly (a lazy restore is not possible: ${r.lazyFallbackReason}); ` + restoreSummary({ ...r, lazyFallbackReason: undefined });
  return (
    `restored ${formatBytes(r.bytes)}B from ${r.path} into ${r.target} in ${formatDurationMs(r.durationMs)} ` +
    `(${load.throughputHuman}); VM ${r.running ? 'running' : 'paused'}`
  );
}

/** A restore that finished while the agent was down: what can still be known. */
export function restoreRecoveredStatus(
  obj: StatusOwner,
  r: { durationMs: number; ramBytes: number; running: boolean; target: string } & Pick<RestoreOutcome, 'mode' | 'lazyFallbackReason' | 'lazy'>,
  now: Date,
  note: string,
): VMRestoreStatus {
  return {
    phase: Phase.Succeeded,
    completionTime: now.toISOString(),
    // Unknown downtime: the whole restore, at most.
    ...restoreTimes(r.durationMs, r.durationMs),
    restoreSize: r.ramBytes,
    ...lazyFields(r),
    observedGeneration: obj.metadata.generation,
    conditions: succeeded(obj, `restored VM ${r.target}; VM ${r.running ? 'running' : 'paused'}${note}`, now),
  };
}
