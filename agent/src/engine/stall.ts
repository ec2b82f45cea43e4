// Bounds a save or restore by what QEMU really does with the snapshot file, not by what its QMP
// says: a QEMU (or a process posing as one in a tenant's pod) can report a migration 'active'
// forever. The agent samples a measure it controls (a save: the file's allocated bytes and its
// mtime, through the fd it holds; a restore: the bytes QEMU's process has read) and gives up when
// the measure has not moved for `stallMs`. `decideStall` is the pure part.
import fs from 'node:fs';
import { formatBytes } from '../../../api/format.js';
import { allocatedBytes } from './file-stats.js';
import { Reason } from '../../../api/protocol.js';
import { VmsnapError } from '../errors.js';

/** One look at the measure. `token` is anything else that proves activity (a save's mtime). */
export interface ProgressSample {
  /** Monotonic count of bytes (allocated in the file, or read by QEMU). */
  bytes: number;
  token?: string;
  /** When it was taken (ms, any monotonic clock). */
  at: number;
}

/** The last time the measure moved. */
export interface StallTrack {
  bytes: number;
  token?: string;
  since: number;
  /** The first sample's bytes and time: what the failure message reports. */
  first: { bytes: number; at: number };
}

export interface StallRule {
  /** How long the measure may stand still. */
  stallMs: number;
  /** The least growth of `bytes` that counts as progress (absorbs noise such as QEMU's own QMP reads). */
  minStepBytes: number;
}

export type StallVerdict = { stalled: false; track: StallTrack } | { stalled: true; track: StallTrack; idleMs: number };

/** Did the measure move since the last progress? Stalled when it stood still for rule.stallMs. */
export function decideStall(track: StallTrack | undefined, sample: ProgressSample, rule: StallRule): StallVerdict {
  if (!track) return { stalled: false, track: { bytes: sample.bytes, token: sample.token, since: sample.at, first: { bytes: sample.bytes, at: sample.at } } };
  const grew = sample.bytes >= track.bytes + Math.max(1, rule.minStepBytes);
  const touched = sample.token !== undefined && sample.token !== track.token;
  if (grew || touched) return { stalled: false, track: { ...track, bytes: sample.bytes, token: sample.token, since: sample.at } };
  const idleMs = sample.at - track.since;
  return idleMs >= rule.stallMs ? { stalled: true, track, idleMs } : { stalled: false, track };
}

export class MigrationStalledError extends VmsnapError {
  override name = 'MigrationStalledError';
  constructor(
    message: string,
    readonly bytes: number,
    readonly idleMs: number,
  ) {
    super(message, { reason: Reason.MigrationStalled });
  }
}

/** What a stall watch reads, and how its failure is worded. */
export interface ProgressMeasure {
  /** Bytes now (and an activity token); throws when it cannot be read (then nothing is decided). */
  read(): { bytes: number; token?: string };
  /** E.g. "QEMU wrote nothing to the snapshot file". */
  idle: string;
  /** E.g. "allocated in the file". */
  unit: string;
  minStepBytes?: number;
}

/** The allocated bytes and mtime of a save's output: the fd the agent holds, or its path under the agent's storage root. */
export function fileWriteMeasure(file: number | string): ProgressMeasure {
  return {
    read: () => {
      const st = typeof file === 'number' ? fs.fstatSync(file, { bigint: true }) : fs.statSync(file, { bigint: true });
      return { bytes: allocatedBytes({ blocks: Number(st.blocks) } as fs.Stats), token: String(st.mtimeNs) };
    },
    idle: 'QEMU wrote nothing to the snapshot file',
    unit: 'allocated in the file',
  };
}

/** QEMU's file reads: the `rchar` of /proc/<pid>/io minus what `ownBytes()` says the agent sent it (its QMP commands). */
export function processReadMeasure(pid: number, ownBytes: () => number): ProgressMeasure {
  return {
    read: () => ({ bytes: Math.max(0, readProcIoRchar(fs.readFileSync(`/proc/${pid}/io`, 'utf8')) - ownBytes()) }),
    idle: 'QEMU read nothing from the snapshot file',
    unit: 'read by QEMU',
    // QEMU's main loop reads its event fds now and then: a real load reads MiBs per second.
    minStepBytes: 64 * 1024,
  };
}

/** `rchar` of a /proc/<pid>/io text. */
export function readProcIoRchar(text: string): number {
  const m = /^rchar:\s*(\d+)$/m.exec(text);
  if (!m) throw new Error('no rchar line in /proc/<pid>/io');
  return Number(m[1]);
}

export interface StallWatch {
  /** Aborted with a MigrationStalledError when the measure stood still for stallMs. */
  readonly signal: AbortSignal;
  stop(): void;
}

/**
 * Samples `measure` every `sampleMs` and aborts its signal once decideStall says stalled.
 * `what` names the operation in the message ("save", "restore", "drain of the cancelled save").
 */
export function watchProgress(measure: ProgressMeasure, opts: { stallMs: number; sampleMs?: number; what: string; onStall?: (err: MigrationStalledError) => void }): StallWatch {
  const controller = new AbortController();
  const rule: StallRule = { stallMs: opts.stallMs, minStepBytes: measure.minStepBytes ?? 1 };
  let track: StallTrack | undefined;
  const sample = () => {
    let now: { bytes: number; token?: string };
    try {
      now = measure.read();
    } catch {
      return; // the file or process is gone: the migration's own outcome says what happened
    }
    const verdict = decideStall(track, { ...now, at: performance.now() }, rule);
    track = verdict.track;
    if (!verdict.stalled) return;
    clearInterval(timer);
    const err = new MigrationStalledError(stallMessage(opts.what, measure, verdict.track, verdict.idleMs), verdict.track.bytes, verdict.idleMs);
    opts.onStall?.(err);
    controller.abort(err);
  };
  const timer = setInterval(sample, opts.sampleMs ?? Math.min(1000, Math.max(50, Math.floor(opts.stallMs / 10))));
  timer.unref();
  sample();
  return { signal: controller.signal, stop: () => clearInterval(timer) };
}

export function stallMessage(what: string, measure: Pick<ProgressMeasure, 'idle' | 'unit'>, track: StallTrack, idleMs: number): string {
  const grown = Math.max(0, track.bytes - track.first.bytes);
  return (
    `the ${what} stalled: ${measure.idle} for ${Math.round(idleMs / 1000)} s ` +
    `(${formatBytes(track.bytes)} ${measure.unit}, ${grown > 0 ? formatBytes(grown) : 'none'} of it during the ${what}), ` +
    "whatever QEMU's QMP reported"
  );
}
