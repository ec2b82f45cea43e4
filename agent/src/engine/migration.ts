// The QMP side of a mapped-ram + multifd migration to or from a file:
// capabilities and parameters (set before migrate / migrate-incoming), the
// fdset that carries our file descriptors, and waiting for the outcome.
import { QmpCommandError } from '../qmp/errors.js';
import type { QmpClient } from '../qmp/client.js';
import { watchProgress, type ProgressMeasure } from './stall.js';
import { VmsnapError } from '../errors.js';
import { planLiveCapture, type LiveCapturePlan } from './convergence.js';

/** Capabilities that QEMU refuses to combine with mapped-ram. */
const INCOMPATIBLE_CAPABILITIES = ['xbzrle', 'postcopy-ram', 'postcopy-preempt', 'compress', 'background-snapshot', 'return-path'];

export interface MigrationSettings {
  channels: number;
  directIO: boolean;
  /** Set on the source only: QEMU's default limit (128 MiB/s) throttles a file save 10x. */
  unlimitedBandwidth: boolean;
  /** Stop in 'pre-switchover' (VM paused, disks still active) until `migrate-continue`. */
  pauseBeforeSwitchover?: boolean;
  /** A live save: a short final pause, and a way to finish whatever the guest does (convergence.ts). */
  live?: boolean;
}

interface Capability {
  capability: string;
  state: boolean;
}

/** What we changed, so it can be put back after the operation. */
export interface SavedMigrationConfig {
  capabilities: Capability[];
  parameters: Record<string, unknown>;
}

export interface ConfiguredMigration extends SavedMigrationConfig {
  /** A live save's: what was set to bring the copy to its final pause. */
  live?: LiveCapturePlan;
}

export class MappedRamUnsupportedError extends VmsnapError {
  override name = 'MappedRamUnsupportedError';
}

export async function configureMigration(client: QmpClient, settings: MigrationSettings): Promise<ConfiguredMigration> {
  const [caps, params, kvm] = await Promise.all([
    client.execute<Capability[]>('query-migrate-capabilities'),
    client.execute<Record<string, unknown>>('query-migrate-parameters'),
    settings.live ? client.execute<{ enabled: boolean }>('query-kvm').catch(() => undefined) : undefined,
  ]);
  const names = new Set(caps.map((c) => c.capability));
  if (!names.has('mapped-ram')) {
    throw new MappedRamUnsupportedError(
      `QEMU ${client.version.major}.${client.version.minor}.${client.version.micro} has no mapped-ram migration capability: vmsnap needs QEMU >= 9.1`,
    );
  }
  const apply = async (live: LiveCapturePlan | undefined): Promise<ConfiguredMigration> => {
    const wanted: Capability[] = [
      { capability: 'mapped-ram', state: true },
      { capability: 'multifd', state: true },
      { capability: 'events', state: true },
      ...INCOMPATIBLE_CAPABILITIES.filter((c) => names.has(c)).map((c) => ({ capability: c, state: false })),
      ...(names.has('pause-before-switchover') ? [{ capability: 'pause-before-switchover', state: settings.pauseBeforeSwitchover === true }] : []),
      ...Object.entries(live?.capabilities ?? {}).map(([capability, state]) => ({ capability, state })),
    ];
    const changed = wanted.filter((w) => caps.find((c) => c.capability === w.capability)?.state !== w.state);
    const newParams: Record<string, unknown> = {
      'multifd-channels': settings.channels,
      'direct-io': settings.directIO,
      ...live?.parameters,
    };
    if ('multifd-compression' in params) newParams['multifd-compression'] = 'none';
    if (settings.unlimitedBandwidth) newParams['max-bandwidth'] = 0;
    // Pipelined, in this order: QMP runs them one after the other.
    await Promise.all([
      changed.length > 0 ? client.execute('migrate-set-capabilities', { capabilities: changed }) : undefined,
      client.execute('migrate-set-parameters', newParams),
    ]);
    return {
      capabilities: changed.map((c) => ({ capability: c.capability, state: !c.state })),
      parameters: Object.fromEntries(Object.keys(newParams).filter((k) => k in params).map((k) => [k, params[k]])),
      ...(live ? { live } : {}),
    };
  };
  const offer = { capabilities: names, parameters: new Set(Object.keys(params)), kvm: kvm?.enabled === true };
  const live = settings.live ? planLiveCapture(offer) : undefined;
  try {
    return await apply(live);
  } catch (err) {
    // Only QEMU can say whether its KVM has a dirty ring: it refuses the capability without one.
    if (!(err instanceof QmpCommandError) || live?.convergence !== 'DirtyLimit') throw err;
    return await apply(planLiveCapture({ ...offer, dirtyLimitRefused: err.message }));
  }
}

/** Puts back what configureMigration changed; best effort (QEMU may be gone). */
export async function restoreMigrationConfig(client: QmpClient, saved: SavedMigrationConfig): Promise<void> {
  if (client.closed) return;
  try {
    if (Object.keys(saved.parameters).length > 0) await client.execute('migrate-set-parameters', saved.parameters);
    if (saved.capabilities.length > 0) await client.execute('migrate-set-capabilities', { capabilities: saved.capabilities });
  } catch {
    // Leaving our settings in place is harmless; the next operation sets its own.
  }
}

/** Adds fds (in order) to one new fdset and returns its id. */
export async function addFdSet(client: QmpClient, fds: number[], opaque: string): Promise<number> {
  let fdsetId: number | undefined;
  for (const fd of fds) {
    const args: Record<string, unknown> = { opaque };
    if (fdsetId !== undefined) args['fdset-id'] = fdsetId;
    const r = await client.execute<{ 'fdset-id': number; fd: number }>('add-fd', args, { fds: [fd] });
    fdsetId = r['fdset-id'];
  }
  if (fdsetId === undefined) throw new Error('addFdSet needs at least one fd');
  return fdsetId;
}

export async function removeFdSet(client: QmpClient, fdsetId: number): Promise<void> {
  if (client.closed) return;
  try {
    await client.execute('remove-fd', { 'fdset-id': fdsetId });
  } catch (err) {
    if (!(err instanceof QmpCommandError)) throw err;
  }
}

export function fileUri(fdsetId: number, offset: number): string {
  return `file:/dev/fdset/${fdsetId},offset=${offset}`;
}

export interface MigrationInfo {
  /** Absent before any migration (e.g. on a fresh -incoming QEMU). */
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  /** auto-converge's current vCPU throttle. */
  'cpu-throttle-percentage'?: number;
  ram?: {
    transferred: number;
    total: number;
    remaining: number;
    duplicate: number;
    normal: number;
    'normal-bytes': number;
    mbps: number;
  };
}

/** The last query-migrate of a wait, and what the wait saw on the way. */
export interface MigrationOutcome extends MigrationInfo {
  /** The highest cpu-throttle-percentage (auto-converge) any poll saw. */
  cpuThrottlePeakPercent: number;
}

/** What a save and a restore both report about the file they moved the VM's state through. */
export interface FileTransferResult {
  path: string;
  bytes: number;
  ramBytes: number;
  durationMs: number;
  throughputMiBps: number;
  channels: number;
  directIO: boolean;
  directIOReason?: string;
}

export interface Progress {
  bytesDone: number;
  bytesTotal: number;
  percent: number;
  transferredBytes: number;
  elapsedMs: number;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

/**
 * Polls query-migrate until the migration ends; wakes early on MIGRATION events.
 * Reports progress from the source's RAM counters. Aborting `signal` (a cancellation, or a
 * stall watch that saw QEMU stop doing anything with the file) ends the wait at once, even
 * while QEMU has not answered a command.
 */
export async function waitForMigration(
  client: QmpClient,
  opts: {
    pollMs: number;
    onProgress?: (p: Progress) => void;
    signal?: AbortSignal;
    startedAt: number;
    until?: string[];
    /** How long one query-migrate may go unanswered (default: the client's); see loadQueryTimeoutMs. */
    queryTimeoutMs?: number;
  },
): Promise<MigrationOutcome> {
  let cpuThrottlePeakPercent = 0;
  let wake: (() => void) | undefined;
  const onEvent = (e: { event: string }) => {
    if (e.event === 'MIGRATION') wake?.();
  };
  const onAbort = () => wake?.();
  client.on('event', onEvent);
  opts.signal?.addEventListener('abort', onAbort);
  try {
    for (;;) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
      const info = await unlessAborted(client.execute<MigrationInfo>('query-migrate', {}, { timeoutMs: opts.queryTimeoutMs }), opts.signal);
      if (info.ram && opts.onProgress) {
        const total = info.ram.total;
        const done = Math.max(0, total - info.ram.remaining);
        opts.onProgress({
          bytesDone: done,
          bytesTotal: total,
          percent: total > 0 ? Math.min(100, (100 * done) / total) : 0,
          transferredBytes: info.ram.transferred,
          elapsedMs: Date.now() - opts.startedAt,
        });
      }
      cpuThrottlePeakPercent = Math.max(cpuThrottlePeakPercent, info['cpu-throttle-percentage'] ?? 0);
      if (info.status && (TERMINAL.has(info.status) || opts.until?.includes(info.status))) return { ...info, cpuThrottlePeakPercent };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, opts.pollMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    client.off('event', onEvent);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** `p`, or the signal's reason as soon as it aborts (a command QEMU does not answer is left to its own timeout). */
export function unlessAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  p.catch(() => undefined); // an answer that comes after the abort is nobody's business
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/**
 * `cont` after a completed outgoing migration. QEMU reports 'completed' (and sends the event) a
 * moment before its run state leaves 'finish-migrate', where it refuses `cont`: it is asked again.
 */
export async function resumeAfterMigration(client: QmpClient, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await client.execute('cont');
      return;
    } catch (err) {
      if (!(err instanceof QmpCommandError) || Date.now() > deadline) throw err;
      // Still finishing, or just left it: asked again (any other refusal is the caller's).
      const { status } = await client.execute<{ status: string }>('query-status');
      if (status !== 'finish-migrate' && status !== 'postmigrate') throw err;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

/** Both signals (either may be absent). */
export function eitherSignal(a: AbortSignal | undefined, b: AbortSignal | undefined): AbortSignal | undefined {
  return a && b ? AbortSignal.any([a, b]) : (a ?? b);
}

/** Cancels a running outgoing migration and waits until QEMU says it stopped. */
export async function cancelMigration(client: QmpClient, timeoutMs = 10_000): Promise<void> {
  if (client.closed) return;
  try {
    await client.execute('migrate_cancel', {}, { timeoutMs });
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !client.closed) {
    const info = await client.execute<MigrationInfo>('query-migrate', {}, { timeoutMs: Math.max(1, deadline - Date.now()) }).catch(() => undefined);
    if (!info || !info.status || TERMINAL.has(info.status) || info.status === 'none') return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Ends an unwanted outgoing save without `migrate_cancel`, which QEMU 10.0 can
 * answer with a crash when the save uses mapped-ram + multifd (a multifd send
 * thread still marks pages in the RAM block's file bitmap after the cancelled
 * migration's cleanup freed it: SIGSEGV in thread mig/src/send_N). Instead the
 * VM is paused, so that even a live save converges at once, and QEMU finishes
 * writing at disk speed; the caller then resumes the VM and discards the file.
 * Only a save still running after `timeoutMs`, or one whose file stops growing
 * for `stall.stallMs` (QEMU hung, or a tenant's QMP reporting a save it does
 * not write), is cancelled after all.
 */
export async function drainMigration(
  client: QmpClient,
  opts: { timeoutMs?: number; stall?: { measure: ProgressMeasure; stallMs: number } } = {},
): Promise<void> {
  if (client.closed) return;
  const watch = opts.stall ? watchProgress(opts.stall.measure, { stallMs: opts.stall.stallMs, what: 'drain of the cancelled save' }) : undefined;
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 300_000);
  const signal = eitherSignal(timeout, watch?.signal)!;
  const ask = <T>(command: string, args?: Record<string, unknown>) => unlessAborted(client.execute<T>(command, args), signal);
  try {
    try {
      const status = await ask<{ running: boolean }>('query-status');
      if (status.running) await ask('stop');
    } catch {
      if (!signal.aborted) return; // QEMU is gone or refuses: nothing left to drain
    }
    while (!signal.aborted && !client.closed) {
      const info = await ask<MigrationInfo>('query-migrate').catch(() => undefined);
      if (signal.aborted) break;
      if (!info || !info.status || TERMINAL.has(info.status) || info.status === 'none') return;
      // A save with disks waits there for us (pause-before-switchover): let it finish.
      if (info.status === 'pre-switchover') await ask('migrate-continue', { state: 'pre-switchover' }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    watch?.stop();
  }
  await cancelMigration(client);
}
