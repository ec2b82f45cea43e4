// Saves a running QEMU VM's RAM and device state to a snapshot file with
// mapped-ram + multifd (+ O_DIRECT), then resumes or stops the VM. Every
// failure path puts a VM that was running back to running.
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { traceStep } from '../clock.js';
import { closeFds, withCleanup, type CleanupStack, type Registered } from '../cleanup-stack.js';
import { QmpClient } from '../qmp/client.js';
import { SNAPSHOT_FORMAT_VERSION, STREAM_OFFSET, writeHeader, type HeaderTrust } from '../snapshot-file/header.js';
import type { DirectIOMode, SnapshotMetadata } from '../snapshot-file/metadata.js';
import { decideDirectIO } from './direct-io.js';
import { queryStatus, queryVmInfo, type QemuVmInfo } from './qemu-info.js';
import {
  addFdSet,
  drainMigration,
  configureMigration,
  eitherSignal,
  fileUri,
  removeFdSet,
  restoreMigrationConfig,
  resumeAfterMigration,
  waitForMigration,
  type MigrationInfo,
  type MigrationOutcome,
  type Progress,
  type FileTransferResult,
} from './migration.js';
import { formatBytes, throughputMiBps } from '../../../api/format.js';
import { finishSnapshotFile } from './finish.js';
import { allocatedBytes } from './file-stats.js';
import { digestsPath, writeDigests } from '../snapshot-file/digests.js';
import { hostDiskFreezer, writableDisks, type BlockInfo, type DiskFreezer, type DiskRecord, type WritableDisk } from './disks.js';
import { OverlayLedger } from './overlay-ledger.js';
import { recordableArgv } from './lazy/recorded-argv.js';
import { fileWriteMeasure, watchProgress, type MigrationStalledError, type ProgressMeasure } from './stall.js';
import { DEFAULT_STALL_TIMEOUT_SECONDS } from '../../../api/agent-defaults.js';
import { VmsnapError } from '../errors.js';
import { liveCaptureOutcome, livePauseMs, type LiveCapturePlan } from './convergence.js';
import type { LiveCaptureStatus } from '../../../api/vmsnapshot.js';

export type AfterSave = 'resume' | 'stop';

export interface SaveOptions {
  /** The VM's QMP socket (also what the header records as the VM's socket). */
  qmpSocket: string;
  /** How to reach QMP instead of connecting to qmpSocket by path (a VM pod's checked connection). */
  connect?: () => Promise<QmpClient>;
  outPath: string;
  channels: number;
  directIO: DirectIOMode;
  after: AfterSave;
  live: boolean;
  /**
   * Freeze the VM's writable disks with the RAM (default true): the VM goes on
   * writing to new overlays and the snapshot records the frozen bases.
   */
  disks?: boolean;
  /** Replace an existing file at outPath instead of refusing. */
  overwrite?: boolean;
  /**
   * The new file's mode (default 0600). The agent makes its files 0644 inside its closed storage
   * root: a VM pod's QEMU reopens a lazy restore's snapshot through /proc/self/fd (daemon/pod-lazy.ts).
   */
  fileMode?: number;
  vm?: { namespace?: string; name?: string };
  /**
   * The agent's: the node's header key and the VMSnapshot this file belongs to,
   * both written into the header (see HeaderTrust). The CLI saves without.
   */
  trust?: Required<HeaderTrust>;
  /** Where the overlays a disk freeze creates are recorded (the agent's, under its storage root); default: this process only. */
  ledger?: OverlayLedger;
  /** How the disks are frozen (a VM pod's: vm/pod-disks.ts); default: the host's, with `ledger`. */
  diskFreezer?: DiskFreezer;
  /**
   * How often to ask QEMU for progress. Short: QEMU's monitor may answer only
   * after a busy stretch, and the MIGRATION event alone is not enough to learn
   * the final byte counts, so a long interval adds up to that much to every save.
   */
  pollMs?: number;
  onProgress?: (p: Progress) => void;
  /**
   * The save fails (MigrationStalledError) when QEMU writes nothing to the file (its allocated
   * bytes and mtime stand still) for this long, whatever QMP reports. Default 60 s.
   */
  stallMs?: number;
  /** Called when the stall bound fires, before the save is rolled back (logs; tests resume a stopped QEMU here). */
  onStalled?: (err: MigrationStalledError) => void;
  signal?: AbortSignal;
  /**
   * Verification mode: after the save (VM resumed, file complete and durable) hash the RAM
   * pages into <file>.digests, which `restore --verify` checks. Not part of durationMs or the pause.
   */
  digest?: boolean;
}

export interface SaveResult extends FileTransferResult {
  vmPausedMs: number;
  logicalBytes: number;
  allocatedBytes: number;
  qemu: { version: string; machine: string; pid: number };
  after: AfterSave;
  /** With `digest`: the sidecar written after the save, or why it could not be (the snapshot itself is good). */
  digests?: { path: string; algorithm: string; durationMs: number; bytesHashed: number } | { error: string };
  /** The frozen disks (see SnapshotMetadata.disks) and how long freezing them paused the VM. */
  disks: DiskRecord[];
  diskFreezeMs: number;
  /** Live saves: how QEMU was brought to the final pause (status.capture). */
  capture?: LiveCaptureStatus;
}

/**
 * Seams for tests, apart from the options: the CLI and the agent pass none. How long the CLI
 * takes to start is in its trace instead (VMSNAP_TRACE=1: the step 'migrate issued').
 */
export interface SaveHooks {
  /** Called right after QEMU accepted `migrate` (tests read QEMU's parameters, or kill a process, here). */
  onMigrating?: (client: QmpClient) => Promise<void> | void;
}

/** QEMU run states a save starts from ('prelaunch': started with -S, never run). */
const SAVEABLE_STATES = ['running', 'paused', 'prelaunch'];

export class SaveError extends VmsnapError {
  override name = 'SaveError';
  /** The snapshot's filesystem had no room for the rest of the RAM when the save failed. */
  readonly noSpace: boolean;
  constructor(message: string, opts: { noSpace?: boolean } = {}) {
    super(message);
    this.noSpace = opts.noSpace ?? false;
  }
}

export async function saveVm(opts: SaveOptions, hooks: SaveHooks = {}): Promise<SaveResult> {
  if (!Number.isInteger(opts.channels) || opts.channels < 1 || opts.channels > 64) {
    throw new SaveError(`channels must be an integer from 1 to 64, got ${opts.channels}`);
  }
  const client = await (opts.connect ? opts.connect() : QmpClient.connect(opts.qmpSocket));
  const save = new SaveRun(client, opts, hooks);
  let result: SaveResult;
  try {
    result = await withCleanup((undo) => save.run(undo));
  } catch (err) {
    throw save.explain(err);
  } finally {
    client.close();
  }
  if (opts.digest && save.metadata) result.digests = await recordDigests(result.path, save.metadata, !!opts.trust);
  return result;
}

/** The save is done and good either way; a failure here only means the snapshot cannot be verified later. */
async function recordDigests(path: string, metadata: SnapshotMetadata, authenticated: boolean): Promise<SaveResult['digests']> {
  try {
    const d = await writeDigests(path, { state: 'complete', streamOffset: metadata.stream.offset, metadata, authenticated });
    return { path: digestsPath(path), algorithm: d.algorithm, durationMs: d.stats.durationMs, bytesHashed: d.stats.bytesHashed };
  } catch (err) {
    return { error: `the RAM digests of ${path} could not be written: ${(err as Error).message}` };
  }
}

/** A full disk (QEMU's write, typed at the failure, or ours, by its errno code) says what to do about it. */
export function explainSaveFailure(err: unknown, outPath: string, ramBytes: number | undefined): unknown {
  const noSpace = (err instanceof SaveError && err.noSpace) || (err as NodeJS.ErrnoException)?.code === 'ENOSPC';
  if (!noSpace || ramBytes === undefined) return err;
  return new SaveError(`${(err as Error).message}; free space for ${outPath}: it needs up to ${formatBytes(ramBytes)} (the guest's RAM)`, { noSpace });
}

/** The file being written: the plain fd (QEMU's main channel), the fds QEMU gets, and what its header says. */
interface Output {
  plain: number;
  fdsetFds: number[];
  metadata: SnapshotMetadata;
  /** What QEMU really writes (the file's allocated bytes). */
  measure: ProgressMeasure;
  /** Removes the file unless the save succeeds. */
  removal: Registered;
  closing: Registered;
}

/** The migration set up in QEMU: the fdset of the file and our settings, both undone unless the save succeeds. */
interface Configured {
  fdsetId: number;
  fdset: Registered;
  config: Registered;
  /** A live save's: what was set to bring the copy to its final pause. */
  live?: LiveCapturePlan;
}

/** A completed migration: when it started, when the VM was stopped (paused saves), how long the disk freeze took. */
interface Migrated {
  outcome: MigrationInfo;
  started: number;
  pausedAt: number | undefined;
  migrateMs: number;
  diskFreezeMs: number;
  /** A live save's: the VM runs again already (resumed at completion); its pause and how the copy converged. */
  live?: { resumed: boolean; pausedMs: number; capture: LiveCaptureStatus };
}

/**
 * One save as named steps. Each step registers on the clean-up stack what undoes it, so a
 * failed or cancelled save puts QEMU back as it was (migration drained, our fdset and settings
 * gone, a VM that was running running again) and leaves no partial file.
 */
class SaveRun {
  private readonly stallMs: number;
  /** The header metadata, once the file is complete. */
  metadata: SnapshotMetadata | undefined;
  private ramBytes: number | undefined;

  constructor(
    private readonly client: QmpClient,
    private readonly opts: SaveOptions,
    private readonly hooks: SaveHooks,
  ) {
    this.stallMs = opts.stallMs ?? DEFAULT_STALL_TIMEOUT_SECONDS * 1000;
  }

  async run(undo: CleanupStack): Promise<SaveResult> {
    const { opts } = this;
    const vm = await this.checkVm();
    const disks = await this.checkDisks(vm);
    // A VM that stops after the save never writes its disks again: they are the
    // bases as they are. A running one must move to overlays at the RAM's instant.
    const freeze = disks.list.length > 0 && opts.after !== 'stop';
    this.ramBytes = vm.ramBytes;
    const directIO = decideDirectIO(opts.directIO, opts.outPath, 'write');
    this.checkAborted();

    const out = this.createFile(undo, vm, directIO);
    // Registered before QEMU is touched, so it runs once QEMU's migration is drained and our settings are gone.
    const resuming = vm.running ? undo.defer('resume the VM', () => this.resume()) : undefined;
    const configured = await this.configure(undo, out, directIO.enabled, freeze);
    this.checkAborted();
    const migrated = await this.migrate(undo, vm, out, configured.fdsetId, disks, freeze, configured.live);
    const finished = await this.finish(out, configured, migrated, freeze);
    const vmPausedMs = await this.leaveVm(vm, migrated, finished.vmPausedMs);
    resuming?.keep();
    out.removal.keep();
    return {
      path: opts.outPath,
      bytes: finished.bytes,
      ramBytes: vm.ramBytes,
      durationMs: finished.durationMs,
      throughputMiBps: throughputMiBps(finished.bytes, finished.durationMs),
      channels: opts.channels,
      directIO: directIO.enabled,
      directIOReason: directIO.reason,
      vmPausedMs,
      logicalBytes: finished.endOffset,
      allocatedBytes: finished.allocatedBytes,
      qemu: { version: vm.version, machine: vm.machine, pid: vm.process.pid },
      after: opts.after,
      disks: out.metadata.disks ?? [],
      diskFreezeMs: migrated.diskFreezeMs,
      ...(migrated.live ? { capture: migrated.live.capture } : {}),
    };
  }

  /** The VM, refused unless QEMU can save it now. */
  private async checkVm(): Promise<QemuVmInfo> {
    const { client, opts } = this;
    const vm = await queryVmInfo(client);
    if (!SAVEABLE_STATES.includes(vm.status)) {
      // QEMU keeps a VM that was not running when it was saved in 'postmigrate' and refuses to migrate it again.
      const hint = vm.status === 'postmigrate' ? ': it was paused when it was last saved, and QEMU saves such a VM only once until it runs again (cont)' : '';
      throw new SaveError(`the VM at ${opts.qmpSocket} is '${vm.status}'; a save needs a running or paused VM (${SAVEABLE_STATES.join(', ')})${hint}`);
    }
    const active = await client.execute<MigrationInfo>('query-migrate');
    if (active.status && ['setup', 'active', 'device', 'pre-switchover', 'cancelling'].includes(active.status)) {
      throw new SaveError(`a migration is already in progress on the VM at ${opts.qmpSocket} (status '${active.status}')`);
    }
    return vm;
  }

  /** The VM's writable disks and how they are frozen, refused (DiskError) before anything is touched. */
  private async checkDisks(vm: QemuVmInfo): Promise<{ list: WritableDisk[]; freezer: DiskFreezer }> {
    const { client, opts } = this;
    const list = opts.disks === false ? [] : writableDisks(await client.execute<BlockInfo[]>('query-block'));
    const freezer = opts.diskFreezer ?? hostDiskFreezer(opts.ledger ?? OverlayLedger.inMemory());
    freezer.check(list, vm.process);
    return { list, freezer };
  }

  /** Creates the file with an "incomplete" header. */
  private createFile(undo: CleanupStack, vm: QemuVmInfo, directIO: { enabled: boolean; reason?: string }): Output {
    const { opts } = this;
    const fds: number[] = [];
    const { plain, removal, closing } = this.openOutput(undo, fds);
    const metadata: SnapshotMetadata = {
      formatVersion: SNAPSHOT_FORMAT_VERSION,
      createdAt: new Date().toISOString(),
      ...(opts.trust ? { snapshot: opts.trust.snapshot } : {}),
      vm: { ...opts.vm, qmpSocket: opts.qmpSocket },
      qemu: {
        version: vm.version,
        machine: vm.machine,
        pid: vm.process.pid,
        startTicks: vm.process.startTicks,
        argv: recordableArgv(vm.process.argv),
        cwd: vm.process.cwd,
      },
      ram: { bytes: vm.ramBytes, mainBlockId: vm.mainBlockId },
      capture: { mode: opts.live ? 'Live' : 'Paused', wasRunning: vm.running, after: opts.after },
      stream: { offset: STREAM_OFFSET, channels: opts.channels, directIO: directIO.enabled, directIOReason: directIO.reason },
    };
    writeHeader(plain, 'incomplete', metadata, opts.trust?.key);
    // QEMU's main channel writes unaligned headers through the plain fd; the
    // multifd channels pick the O_DIRECT one (same access mode, O_DIRECT bit set).
    const fdsetFds = [plain];
    if (directIO.enabled) {
      const direct = fs.openSync(opts.outPath, fs.constants.O_WRONLY | fs.constants.O_DIRECT);
      fds.push(direct);
      fdsetFds.push(direct);
    }
    return { plain, fdsetFds, metadata, measure: fileWriteMeasure(plain), removal, closing };
  }

  /** Opens a new file at outPath (another's only with overwrite); from then on it is removed unless the save succeeds. */
  private openOutput(undo: CleanupStack, fds: number[]): { plain: number; removal: Registered; closing: Registered } {
    const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
    const out = this.opts.outPath;
    try {
      // Overwriting unlinks first: the old file may back a lazily restored VM, which keeps its copy.
      if (this.opts.overwrite) fs.rmSync(out, { force: true });
      const mode = this.opts.fileMode ?? 0o600;
      const plain = fs.openSync(out, O_WRONLY | O_CREAT | O_EXCL, mode);
      // Asynchronous: freeing GiBs of extents takes the kernel a while, and a daemon's event loop goes on meanwhile.
      const removal = undo.defer(`remove the partial ${out}`, () => fs.promises.rm(out, { force: true }));
      const closing = undo.defer(`close ${out}`, () => closeFds(fds));
      fds.push(plain);
      // The umask may have taken bits away.
      if (mode !== 0o600) fs.fchmodSync(plain, mode);
      return { plain, removal, closing };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EEXIST') throw new SaveError(`--out: ${out} already exists; remove it or choose another path`);
      throw new SaveError(`--out: cannot create ${out}: ${e.message}`);
    }
  }

  /** Sets QEMU's migration up for the file and hands it the fds. */
  private async configure(undo: CleanupStack, out: Output, directIO: boolean, freeze: boolean): Promise<Configured> {
    const { client, opts } = this;
    const savedConfig = await configureMigration(client, {
      channels: opts.channels,
      directIO,
      unlimitedBandwidth: true,
      pauseBeforeSwitchover: freeze,
      live: opts.live,
    });
    if (savedConfig.live) out.metadata.capture.convergence = savedConfig.live.convergence;
    const config = undo.defer('put back the migration settings', () => restoreMigrationConfig(client, savedConfig));
    const fdsetId = await addFdSet(client, out.fdsetFds, 'vmsnap-save');
    const fdset = undo.defer(`remove fdset ${fdsetId}`, () => removeFdSet(client, fdsetId).catch(() => undefined));
    return { fdsetId, fdset, config, ...(savedConfig.live ? { live: savedConfig.live } : {}) };
  }

  /**
   * Stops a paused save's VM, runs the migration to completion and, when disks are frozen, freezes
   * them at the RAM's instant (QEMU holds the save before switchover). Each wait is bounded by
   * the file's growth; the disk freeze between two waits is the agent's own work.
   */
  private async migrate(
    undo: CleanupStack,
    vm: QemuVmInfo,
    out: Output,
    fdsetId: number,
    disks: { list: WritableDisk[]; freezer: DiskFreezer },
    freeze: boolean,
    live: LiveCapturePlan | undefined,
  ): Promise<Migrated> {
    const { client, opts } = this;
    const started = Date.now();
    let pausedAt: number | undefined;
    if (!opts.live && vm.running) {
      await client.execute('stop');
      pausedAt = Date.now();
    }
    const draining = undo.defer('drain the migration', () => drainMigration(client, { stall: { measure: out.measure, stallMs: this.stallMs } }));
    traceStep('migrate issued');
    await client.execute('migrate', { uri: fileUri(fdsetId, STREAM_OFFSET) });
    await this.hooks.onMigrating?.(client);
    const wait = (until?: string[]) => this.waitForSave(out.measure, started, until);
    let outcome = await wait(freeze ? ['pre-switchover'] : undefined);
    const throttlePeak = outcome.cpuThrottlePeakPercent;
    let diskFreezeMs = 0;
    if (outcome.status === 'pre-switchover') {
      // The guest is stopped and the disks are still active: the RAM's instant.
      const t = performance.now();
      let freezeError: unknown;
      try {
        out.metadata.disks = await disks.freezer.freeze(client, disks.list, vm.process.argv, vm.process.cwd);
        // Recorded before the save goes on: an agent that dies now must not finish the file without them.
        writeHeader(out.plain, 'incomplete', out.metadata, opts.trust?.key);
      } catch (err) {
        freezeError = err;
      }
      diskFreezeMs = performance.now() - t;
      await client.execute('migrate-continue', { state: 'pre-switchover' });
      outcome = await wait();
      if (freezeError) {
        draining.keep();
        throw freezeError;
      }
    } else if (freeze && outcome.status === 'completed') {
      draining.keep();
      throw new SaveError(
        `QEMU ${vm.version} finished the save without holding it before switchover (capability pause-before-switchover), ` +
          'so the disks could not be frozen with the RAM; nothing was kept',
      );
    } else if (disks.list.length > 0 && !freeze) {
      out.metadata.disks = disks.freezer.records(disks.list, vm.process.argv, vm.process.cwd);
    }
    draining.keep();
    if (outcome.status !== 'completed') {
      throw new SaveError(`QEMU's save ${outcome.status}: ${outcome['error-desc'] ?? 'no reason given'}`, { noSpace: this.outOfSpace(out.plain, vm.ramBytes) });
    }
    const migrateMs = Date.now() - started;
    // Live: the copy is whole at 'completed', where QEMU holds the VM stopped until told; it runs
    // again at once, before the file is finished (header, fsync), which it no longer touches.
    const resumed = !!live && vm.running && opts.after !== 'stop';
    if (resumed) await resumeAfterMigration(client);
    const liveOutcome = live && { resumed, pausedMs: livePauseMs(outcome, started, Date.now()), capture: liveCaptureOutcome(live, throttlePeak, outcome.downtime) };
    return { outcome, started, pausedAt, migrateMs, diskFreezeMs, ...(liveOutcome ? { live: liveOutcome } : {}) };
  }

  private async waitForSave(measure: ProgressMeasure, started: number, until?: string[]): Promise<MigrationOutcome> {
    const { opts } = this;
    const watch = watchProgress(measure, { stallMs: this.stallMs, what: 'save', onStall: opts.onStalled });
    try {
      const signal = eitherSignal(opts.signal, watch.signal);
      return await waitForMigration(this.client, { pollMs: opts.pollMs ?? 20, onProgress: opts.onProgress, signal, startedAt: started, until });
    } finally {
      watch.stop();
    }
  }

  /**
   * Completes the file: QEMU gives its fds back before the header is finished, so nothing it
   * writes through the fdset can land after "DONE" (a QEMU that kept a dup of its own can still
   * write, which the header's and structure's MACs catch). Then our migration settings go.
   */
  private async finish(out: Output, configured: Configured, m: Migrated, freeze: boolean) {
    const { client, opts } = this;
    const bytes = m.outcome.ram?.transferred ?? 0;
    let durationMs = 0;
    let vmPausedMs = 0;
    await removeFdSet(client, configured.fdsetId);
    configured.fdset.keep();
    const { endOffset, allocatedBytes: allocated } = finishSnapshotFile(out.plain, opts.outPath, out.metadata, () => {
      durationMs = Date.now() - m.started;
      vmPausedMs = m.live ? m.live.pausedMs : m.pausedAt !== undefined ? Date.now() - m.pausedAt : 0;
      return {
        durationMs,
        migrateMs: m.migrateMs,
        syncMs: durationMs - m.migrateMs,
        vmPausedMs,
        bytesWritten: bytes,
        throughputMiBps: throughputMiBps(bytes, durationMs),
        ...(freeze ? { diskFreezeMs: m.diskFreezeMs } : {}),
      };
    }, opts.trust?.key);
    this.metadata = out.metadata;
    await out.closing.now();
    await configured.config.now();
    return { bytes, durationMs, vmPausedMs, endOffset, allocatedBytes: allocated };
  }

  /** --after stop quits QEMU; else a VM that was running runs again. Returns how long the VM was paused in all. */
  private async leaveVm(vm: QemuVmInfo, m: Migrated, vmPausedMs: number): Promise<number> {
    const { client } = this;
    if (this.opts.after === 'stop') {
      await client.execute('quit').catch(() => undefined);
      await client.waitClosed(10_000);
      return vmPausedMs;
    }
    if (!vm.running || m.live?.resumed) return vmPausedMs;
    await client.execute('cont');
    return m.pausedAt !== undefined ? Date.now() - m.pausedAt : vmPausedMs;
  }

  /** A VM that was running before a failed save runs again (it may have been paused by our stop, at a live save's switchover, or held before it). */
  private async resume(): Promise<void> {
    const { client } = this;
    if (client.closed) return;
    const status = await queryStatus(client).catch(() => undefined);
    if (status && !status.running) await client.execute('cont').catch(() => undefined);
  }

  private checkAborted(): void {
    if (this.opts.signal?.aborted) throw this.opts.signal.reason ?? new SaveError('the save was cancelled');
  }

  /**
   * QEMU reports a failed write only as text (query-migrate's error-desc): whether the disk was
   * full is read from the filesystem instead, while the partial file still holds its space.
   */
  private outOfSpace(fd: number, ramBytes: number): boolean {
    try {
      const fsStat = fs.statfsSync(path.dirname(this.opts.outPath));
      return fsStat.bavail * fsStat.bsize < ramBytes - allocatedBytes(fs.fstatSync(fd));
    } catch {
      return false;
    }
  }

  explain(err: unknown): unknown {
    return explainSaveFailure(err, this.opts.outPath, this.ramBytes);
  }
}

