// Saves a running QEMU VM's RAM and device state to a snapshot file with
// mapped-ram + multifd (+ O_DIRECT), then resumes or stops the VM. Every
// failure path puts a VM that was running back to running.
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { sinceProcessStartMs } from '../clock.js';
import { QmpClient } from '../qmp/client.js';
import { SNAPSHOT_FORMAT_VERSION, STREAM_OFFSET, writeHeader, type HeaderTrust } from '../snapshot-file/header.js';
import type { DirectIOMode, SnapshotMetadata } from '../snapshot-file/metadata.js';
import { decideDirectIO } from './direct-io.js';
import { queryStatus, queryVmInfo } from './qemu-info.js';
import {
  addFdSet,
  drainMigration,
  configureMigration,
  eitherSignal,
  fileUri,
  removeFdSet,
  restoreMigrationConfig,
  waitForMigration,
  type MigrationInfo,
  type Progress,
  type SavedMigrationConfig,
} from './migration.js';
import { formatBytes, throughputMiBps } from '../../../api/format.js';
import { finishSnapshotFile } from './finish.js';
import { allocatedBytes } from './file-stats.js';
import { digestsPath, writeDigests } from '../snapshot-file/digests.js';
import { hostDiskFreezer, writableDisks, type BlockInfo, type DiskFreezer, type DiskRecord } from './disks.js';
import { OverlayLedger } from './overlay-ledger.js';
import { recordableArgv } from './lazy/recorded-argv.js';
import { fileWriteMeasure, watchProgress, type MigrationStalledError, type ProgressMeasure } from './stall.js';
import { DEFAULT_STALL_TIMEOUT_SECONDS } from '../../../api/agent-defaults.js';
import { VmsnapError } from '../errors.js';

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
  /** Called right after QEMU accepted `migrate` (tests read QEMU's parameters here). */
  onMigrating?: (client: QmpClient) => Promise<void> | void;
  signal?: AbortSignal;
  /**
   * Verification mode: after the save (VM resumed, file complete and durable) hash the RAM
   * pages into <file>.digests, which `restore --verify` checks. Not part of durationMs or the pause.
   */
  digest?: boolean;
}

export interface SaveResult {
  path: string;
  bytes: number;
  ramBytes: number;
  durationMs: number;
  throughputMiBps: number;
  channels: number;
  directIO: boolean;
  directIOReason?: string;
  vmPausedMs: number;
  logicalBytes: number;
  allocatedBytes: number;
  qemu: { version: string; machine: string; pid: number };
  /** Milliseconds from process start to the `migrate` command (CLI start-up cost). */
  migrateIssuedAtMs: number;
  after: AfterSave;
  /** With `digest`: the sidecar written after the save, or why it could not be (the snapshot itself is good). */
  digests?: { path: string; algorithm: string; durationMs: number; bytesHashed: number } | { error: string };
  /** The frozen disks (see SnapshotMetadata.disks) and how long freezing them paused the VM. */
  disks: DiskRecord[];
  diskFreezeMs: number;
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

export async function saveVm(opts: SaveOptions): Promise<SaveResult> {
  if (!Number.isInteger(opts.channels) || opts.channels < 1 || opts.channels > 64) {
    throw new SaveError(`channels must be an integer from 1 to 64, got ${opts.channels}`);
  }
  const client = await (opts.connect ? opts.connect() : QmpClient.connect(opts.qmpSocket));
  const state = new SaveState(client, opts);
  let result: SaveResult;
  try {
    result = await state.run();
  } catch (err) {
    await state.rollBack();
    throw state.explain(err);
  } finally {
    client.close();
  }
  if (opts.digest && state.metadata) result.digests = await recordDigests(result.path, state.metadata, !!opts.trust);
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

/** One save's resources, so that rollBack knows exactly what to undo. */
class SaveState {
  private fds: number[] = [];
  private createdFile = false;
  private fdsetId: number | undefined;
  private savedConfig: SavedMigrationConfig | undefined;
  private wasRunning = false;
  private migrating = false;
  /** What QEMU really writes (the file's allocated bytes), once the file is open. */
  private measure: ProgressMeasure | undefined;
  private readonly stallMs: number;
  /** The header metadata, once the file is complete. */
  metadata: SnapshotMetadata | undefined;
  private ramBytes: number | undefined;

  constructor(
    private readonly client: QmpClient,
    private readonly opts: SaveOptions,
  ) {
    this.stallMs = opts.stallMs ?? DEFAULT_STALL_TIMEOUT_SECONDS * 1000;
  }

  async run(): Promise<SaveResult> {
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
    this.wasRunning = vm.running;
    const disks = opts.disks === false ? [] : writableDisks(await client.execute<BlockInfo[]>('query-block'));
    const freezer = opts.diskFreezer ?? hostDiskFreezer(opts.ledger ?? OverlayLedger.inMemory());
    freezer.check(disks, vm.process);
    // A VM that stops after the save never writes its disks again: they are the
    // bases as they are. A running one must move to overlays at the RAM's instant.
    const freeze = disks.length > 0 && opts.after !== 'stop';
    this.ramBytes = vm.ramBytes;
    const directIO = decideDirectIO(opts.directIO, opts.outPath, 'write');
    this.checkAborted();

    const plain = this.openOutput();
    const measure = (this.measure = fileWriteMeasure(plain));
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
    if (directIO.enabled) fdsetFds.push(this.open(fs.constants.O_WRONLY | fs.constants.O_DIRECT));

    this.savedConfig = await configureMigration(client, {
      channels: opts.channels,
      directIO: directIO.enabled,
      unlimitedBandwidth: true,
      pauseBeforeSwitchover: freeze,
    });
    this.fdsetId = await addFdSet(client, fdsetFds, 'vmsnap-save');
    this.checkAborted();

    const started = Date.now();
    let pausedAt: number | undefined;
    if (!opts.live && vm.running) {
      await client.execute('stop');
      pausedAt = Date.now();
    }
    const migrateIssuedAtMs = sinceProcessStartMs();
    this.migrating = true;
    await client.execute('migrate', { uri: fileUri(this.fdsetId, STREAM_OFFSET) });
    await opts.onMigrating?.(client);
    // Each wait is bounded by the file's growth; the disk freeze between two waits is the agent's own work.
    const wait = async (until?: string[]) => {
      const watch = watchProgress(measure, { stallMs: this.stallMs, what: 'save', onStall: opts.onStalled });
      try {
        const signal = eitherSignal(opts.signal, watch.signal);
        return await waitForMigration(client, { pollMs: opts.pollMs ?? 20, onProgress: opts.onProgress, signal, startedAt: started, until });
      } finally {
        watch.stop();
      }
    };
    let outcome = await wait(freeze ? ['pre-switchover'] : undefined);
    let diskFreezeMs = 0;
    if (outcome.status === 'pre-switchover') {
      // The guest is stopped and the disks are still active: the RAM's instant.
      const t = performance.now();
      let freezeError: unknown;
      try {
        metadata.disks = await freezer.freeze(client, disks, vm.process.argv, vm.process.cwd);
        // Recorded before the save goes on: an agent that dies now must not finish the file without them.
        writeHeader(plain, 'incomplete', metadata, opts.trust?.key);
      } catch (err) {
        freezeError = err;
      }
      diskFreezeMs = performance.now() - t;
      await client.execute('migrate-continue', { state: 'pre-switchover' });
      outcome = await wait();
      if (freezeError) {
        this.migrating = false;
        throw freezeError;
      }
    } else if (freeze && outcome.status === 'completed') {
      this.migrating = false;
      throw new SaveError(
        `QEMU ${vm.version} finished the save without holding it before switchover (capability pause-before-switchover), ` +
          'so the disks could not be frozen with the RAM; nothing was kept',
      );
    } else if (disks.length > 0 && !freeze) {
      metadata.disks = freezer.records(disks, vm.process.argv, vm.process.cwd);
    }
    this.migrating = false;
    if (outcome.status !== 'completed') {
      throw new SaveError(`QEMU's save ${outcome.status}: ${outcome['error-desc'] ?? 'no reason given'}`, { noSpace: this.outOfSpace(plain, vm.ramBytes) });
    }
    const migrateMs = Date.now() - started;

    const bytes = outcome.ram?.transferred ?? 0;
    let durationMs = 0;
    let vmPausedMs = 0;
    // QEMU gives its fds back before the header is finished: nothing it writes
    // through the fdset can land after "DONE". A QEMU that kept a dup of its
    // own can still write, which the header's and structure's MACs catch.
    await removeFdSet(client, this.fdsetId);
    this.fdsetId = undefined;
    const { endOffset, allocatedBytes: allocated } = finishSnapshotFile(plain, opts.outPath, metadata, () => {
      durationMs = Date.now() - started;
      vmPausedMs = opts.live ? (outcome.downtime ?? 0) : pausedAt !== undefined ? Date.now() - pausedAt : 0;
      return {
        durationMs,
        migrateMs,
        syncMs: durationMs - migrateMs,
        vmPausedMs,
        bytesWritten: bytes,
        throughputMiBps: throughputMiBps(bytes, durationMs),
        ...(freeze ? { diskFreezeMs } : {}),
      };
    }, opts.trust?.key);
    this.metadata = metadata;
    this.closeFds();
    await restoreMigrationConfig(client, this.savedConfig);
    this.savedConfig = undefined;

    let pausedTotalMs = vmPausedMs;
    if (opts.after === 'stop') {
      await client.execute('quit').catch(() => undefined);
      await client.waitClosed(10_000);
    } else if (vm.running) {
      await client.execute('cont');
      if (pausedAt !== undefined) pausedTotalMs = Date.now() - pausedAt;
    }
    return {
      path: opts.outPath,
      bytes,
      ramBytes: vm.ramBytes,
      durationMs,
      throughputMiBps: throughputMiBps(bytes, durationMs),
      channels: opts.channels,
      directIO: directIO.enabled,
      directIOReason: directIO.reason,
      vmPausedMs: pausedTotalMs,
      logicalBytes: endOffset,
      allocatedBytes: allocated,
      qemu: { version: vm.version, machine: vm.machine, pid: vm.process.pid },
      migrateIssuedAtMs,
      after: opts.after,
      disks: metadata.disks ?? [],
      diskFreezeMs,
    };
  }

  private checkAborted(): void {
    if (this.opts.signal?.aborted) throw this.opts.signal.reason ?? new SaveError('the save was cancelled');
  }

  private openOutput(): number {
    const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
    try {
      // Overwriting unlinks first: the old file may back a lazily restored VM, which keeps its copy.
      if (this.opts.overwrite) fs.rmSync(this.opts.outPath, { force: true });
      const mode = this.opts.fileMode ?? 0o600;
      const fd = fs.openSync(this.opts.outPath, O_WRONLY | O_CREAT | O_EXCL, mode);
      // The umask may have taken bits away.
      if (mode !== 0o600) fs.fchmodSync(fd, mode);
      this.createdFile = true;
      this.fds.push(fd);
      return fd;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EEXIST') throw new SaveError(`--out: ${this.opts.outPath} already exists; remove it or choose another path`);
      throw new SaveError(`--out: cannot create ${this.opts.outPath}: ${e.message}`);
    }
  }

  private open(flags: number): number {
    const fd = fs.openSync(this.opts.outPath, flags);
    this.fds.push(fd);
    return fd;
  }

  private closeFds(): void {
    for (const fd of this.fds.splice(0)) fs.closeSync(fd);
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

  /** Undoes a failed or cancelled save: QEMU back as it was, no partial file. */
  async rollBack(): Promise<void> {
    const { client } = this;
    if (this.migrating) await drainMigration(client, this.measure ? { stall: { measure: this.measure, stallMs: this.stallMs } } : {});
    if (this.fdsetId !== undefined) await removeFdSet(client, this.fdsetId).catch(() => undefined);
    if (this.savedConfig) await restoreMigrationConfig(client, this.savedConfig);
    if (this.wasRunning && !client.closed) {
      const status = await queryStatus(client).catch(() => undefined);
      if (status && !status.running) await client.execute('cont').catch(() => undefined);
    }
    this.closeFds();
    // Asynchronous: freeing GiBs of extents takes the kernel a while, and a daemon's event loop goes on meanwhile.
    if (this.createdFile) await fs.promises.rm(this.opts.outPath, { force: true });
  }
}
