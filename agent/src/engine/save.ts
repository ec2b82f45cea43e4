// Saves a running QEMU VM's RAM and device state to a snapshot file with
// mapped-ram + multifd (+ O_DIRECT), then resumes or stops the VM. Every
// failure path puts a VM that was running back to running.
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { QmpClient } from '../qmp/client.js';
import { SNAPSHOT_FORMAT_VERSION, STREAM_OFFSET, writeHeader } from '../snapshot-file/header.js';
import type { DirectIOMode, SnapshotMetadata } from '../snapshot-file/metadata.js';
import { decideDirectIO } from './direct-io.js';
import { queryStatus, queryVmInfo } from './qemu-info.js';
import {
  addFdSet,
  drainMigration,
  configureMigration,
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

export type AfterSave = 'resume' | 'stop';

export interface SaveOptions {
  qmpSocket: string;
  outPath: string;
  channels: number;
  directIO: DirectIOMode;
  after: AfterSave;
  live: boolean;
  /** Replace an existing file at outPath instead of refusing. */
  overwrite?: boolean;
  vm?: { namespace?: string; name?: string };
  /**
   * How often to ask QEMU for progress. Short: QEMU's monitor may answer only
   * after a busy stretch, and the MIGRATION event alone is not enough to learn
   * the final byte counts, so a long interval adds up to that much to every save.
   */
  pollMs?: number;
  onProgress?: (p: Progress) => void;
  /** Called right after QEMU accepted `migrate` (tests read QEMU's parameters here). */
  onMigrating?: (client: QmpClient) => Promise<void> | void;
  signal?: AbortSignal;
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
}

/** QEMU run states a save starts from ('prelaunch': started with -S, never run). */
const SAVEABLE_STATES = ['running', 'paused', 'prelaunch'];

export class SaveError extends Error {
  override name = 'SaveError';
}

export async function saveVm(opts: SaveOptions): Promise<SaveResult> {
  if (!Number.isInteger(opts.channels) || opts.channels < 1 || opts.channels > 64) {
    throw new SaveError(`channels must be an integer from 1 to 64, got ${opts.channels}`);
  }
  const client = await QmpClient.connect(opts.qmpSocket);
  const state = new SaveState(client, opts);
  try {
    return await state.run();
  } catch (err) {
    await state.rollBack();
    throw state.explain(err);
  } finally {
    client.close();
  }
}

/** One save's resources, so that rollBack knows exactly what to undo. */
class SaveState {
  private fds: number[] = [];
  private createdFile = false;
  private fdsetId: number | undefined;
  private savedConfig: SavedMigrationConfig | undefined;
  private wasRunning = false;
  private migrating = false;
  private ramBytes: number | undefined;

  constructor(
    private readonly client: QmpClient,
    private readonly opts: SaveOptions,
  ) {}

  async run(): Promise<SaveResult> {
    const { client, opts } = this;
    const vm = await queryVmInfo(client);
    if (!SAVEABLE_STATES.includes(vm.status)) {
      throw new SaveError(`the VM at ${opts.qmpSocket} is '${vm.status}'; a save needs a running or paused VM (${SAVEABLE_STATES.join(', ')})`);
    }
    const active = await client.execute<MigrationInfo>('query-migrate');
    if (active.status && ['setup', 'active', 'device', 'pre-switchover', 'cancelling'].includes(active.status)) {
      throw new SaveError(`a migration is already in progress on the VM at ${opts.qmpSocket} (status '${active.status}')`);
    }
    this.wasRunning = vm.running;
    this.ramBytes = vm.ramBytes;
    const directIO = decideDirectIO(opts.directIO, opts.outPath, 'write');
    this.checkAborted();

    const plain = this.openOutput();
    const metadata: SnapshotMetadata = {
      formatVersion: SNAPSHOT_FORMAT_VERSION,
      createdAt: new Date().toISOString(),
      vm: { ...opts.vm, qmpSocket: opts.qmpSocket },
      qemu: { version: vm.version, machine: vm.machine, pid: vm.process.pid, argv: vm.process.argv, cwd: vm.process.cwd },
      ram: { bytes: vm.ramBytes, mainBlockId: vm.mainBlockId },
      capture: { mode: opts.live ? 'Live' : 'Paused', wasRunning: vm.running, after: opts.after },
      stream: { offset: STREAM_OFFSET, channels: opts.channels, directIO: directIO.enabled, directIOReason: directIO.reason },
    };
    writeHeader(plain, 'incomplete', metadata);
    // QEMU's main channel writes unaligned headers through the plain fd; the
    // multifd channels pick the O_DIRECT one (same access mode, O_DIRECT bit set).
    const fdsetFds = [plain];
    if (directIO.enabled) fdsetFds.push(this.open(fs.constants.O_WRONLY | fs.constants.O_DIRECT));

    this.savedConfig = await configureMigration(client, { channels: opts.channels, directIO: directIO.enabled, unlimitedBandwidth: true });
    this.fdsetId = await addFdSet(client, fdsetFds, 'vmsnap-save');
    this.checkAborted();

    const started = Date.now();
    let pausedAt: number | undefined;
    if (!opts.live && vm.running) {
      await client.execute('stop');
      pausedAt = Date.now();
    }
    const migrateIssuedAtMs = performance.now();
    this.migrating = true;
    await client.execute('migrate', { uri: fileUri(this.fdsetId, STREAM_OFFSET) });
    await opts.onMigrating?.(client);
    const outcome = await waitForMigration(client, { pollMs: opts.pollMs ?? 20, onProgress: opts.onProgress, signal: opts.signal, startedAt: started });
    this.migrating = false;
    if (outcome.status !== 'completed') {
      throw new SaveError(`QEMU's save ${outcome.status}: ${outcome['error-desc'] ?? 'no reason given'}`);
    }
    const migrateMs = Date.now() - started;

    const bytes = outcome.ram?.transferred ?? 0;
    let durationMs = 0;
    let vmPausedMs = 0;
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
      };
    });
    this.closeFds();
    await removeFdSet(client, this.fdsetId);
    this.fdsetId = undefined;
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
    };
  }

  private checkAborted(): void {
    if (this.opts.signal?.aborted) throw this.opts.signal.reason ?? new SaveError('the save was cancelled');
  }

  private openOutput(): number {
    const { O_WRONLY, O_CREAT, O_EXCL, O_TRUNC } = fs.constants;
    try {
      const fd = fs.openSync(this.opts.outPath, O_WRONLY | O_CREAT | (this.opts.overwrite ? O_TRUNC : O_EXCL), 0o600);
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

  /** A full disk (QEMU's write or ours) says what to do about it. */
  explain(err: unknown): unknown {
    const message = (err as Error)?.message ?? '';
    if (!/no space left|ENOSPC/i.test(message) || this.ramBytes === undefined) return err;
    return new SaveError(`${message}; free space for ${this.opts.outPath}: it needs up to ${formatBytes(this.ramBytes)} (the guest's RAM)`);
  }

  /** Undoes a failed or cancelled save: QEMU back as it was, no partial file. */
  async rollBack(): Promise<void> {
    const { client } = this;
    if (this.migrating) await drainMigration(client);
    if (this.fdsetId !== undefined) await removeFdSet(client, this.fdsetId).catch(() => undefined);
    if (this.savedConfig) await restoreMigrationConfig(client, this.savedConfig);
    if (this.wasRunning && !client.closed) {
      const status = await queryStatus(client).catch(() => undefined);
      if (status && !status.running) await client.execute('cont').catch(() => undefined);
    }
    this.closeFds();
    if (this.createdFile) fs.rmSync(this.opts.outPath, { force: true });
  }
}
