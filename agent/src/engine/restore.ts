// Restores a snapshot into a QEMU waiting with -incoming defer: attached to
// one the VM's owner started, or launched from the snapshot's recorded
// command line. The file is checked before QEMU is touched.
import fs from 'node:fs';
import { QmpClient } from '../qmp/client.js';
import { native } from '../native.js';
import { sinceProcessStartMs, traceStep } from '../clock.js';
import type { VerifiedSnapshot } from '../snapshot-file/verify.js';
import type { DigestCheck } from '../snapshot-file/check-digests.js';
import type { DirectIOMode } from '../snapshot-file/metadata.js';
import type { HeaderTrust } from '../snapshot-file/header.js';
import { OverlayLedger } from './overlay-ledger.js';
import { decideDirectIO } from './direct-io.js';
import { throughputMiBps } from '../../../api/format.js';
import { launchQemu, movedPath, relaunchArgv, type ArgvRewrite } from './launch.js';
import { createRestoreOverlays, removeOverlays as removeOverlaysOf, writableDisks, type BlockInfo, type DiskRewrite } from './disks.js';
import {
  addFdSet,
  configureMigration,
  eitherSignal,
  fileUri,
  removeFdSet,
  waitForMigration,
  type MigrationInfo,
} from './migration.js';
import { queryMachine, queryRamBytes, queryStatus } from './qemu-info.js';
import { buildCompanionStream, type CompanionStream } from './lazy/companion.js';
import { decideLazy, type LazyDecision } from './lazy/decide.js';
import { abandonEarlyLaunch, earlyLazyLaunch, type EarlyLaunch } from './lazy/early-launch.js';
import { startPrefetch } from './lazy/prefetch.js';
import { planPreallocArgv, type PreallocPlan } from './prealloc.js';
import type { LazyMapping } from '../../../api/vm-pod.js';
import { DEFAULT_STALL_TIMEOUT_SECONDS } from '../../../api/agent-defaults.js';
import { processReadMeasure, watchProgress, type MigrationStalledError } from './stall.js';
import { VmsnapError } from '../errors.js';

export interface RestoreOptions {
  inPath: string;
  qmpSocket: string;
  /** Without launch: how to reach QMP instead of connecting to qmpSocket by path (a VM pod's checked connection). */
  connect?: () => Promise<QmpClient>;
  /** Default: the channels the snapshot was saved with. */
  channels?: number;
  directIO: DirectIOMode;
  /** Start QEMU from the snapshot's command line instead of attaching. */
  launch?: boolean;
  /** Leave the VM paused after the restore. */
  paused?: boolean;
  pollMs?: number;
  onMigrating?: (client: QmpClient) => Promise<void> | void;
  /**
   * The restore fails (MigrationStalledError) when QEMU's process reads nothing (its /proc io
   * `rchar`, less our QMP commands) for this long, whatever QMP reports. Default 60 s.
   */
  stallMs?: number;
  onStalled?: (err: MigrationStalledError) => void;
  /**
   * With launch: how the recorded command line changes (a copy under another name), extra
   * environment, and where QEMU's log goes (default <socket>.qemu.log; the agent's is its own directory).
   */
  relaunch?: { rewrite?: ArgvRewrite; env?: Record<string, string>; logPath?: string };
  /** Aborting stops waiting for the load; a QEMU this call launched is quit (its VM is only half loaded). */
  signal?: AbortSignal;
  /** Verification mode: check the RAM pages against <file>.digests before QEMU is touched. */
  verify?: boolean;
  /** With lazy: a QEMU the caller already started with earlyLazyLaunch (same file, socket and relaunch). */
  early?: EarlyLaunch;
  /**
   * Map the main RAM block from the file instead of loading it (needs launch):
   * the VM runs at once. When that cannot work the restore is eager and says why.
   */
  lazy?: {
    prefetch?: boolean;
    /**
     * Without launch: a target the caller starts itself once the decision is made (a VM pod's
     * launcher). `argv` is the command line that target runs, for the decision (hugepages,
     * shared RAM... make the restore eager); `prepare` gets the main block's place in the file
     * when the restore is lazy (undefined when eager) and must leave a QEMU waiting with
     * -incoming defer, its RAM mapped from the file when lazy, before `connect` is called.
     */
    attach?: { argv: string[]; prepare(mapping: LazyMapping | undefined): Promise<void> };
  };
  /**
   * The agent's: the node's header key and the VMSnapshot restored from. The
   * file is refused unless this agent wrote its header, for that VMSnapshot,
   * and its stream structure is unchanged (checked before anything is read
   * from the header, the early lazy launch included). The CLI restores without.
   */
  trust?: Required<HeaderTrust>;
  /**
   * The file already checked in full by the caller (verifySnapshotFile of inPath, with `trust`),
   * moments ago: not read twice. Only the agent's, which holds the file in use meanwhile.
   */
  verified?: VerifiedSnapshot;
  /** Where the restore's disk overlays are recorded (the agent's, under its storage root); default: this process only. */
  ledger?: OverlayLedger;
  /**
   * Preallocate the guest RAM of an eager launched restore before the load (prealloc.ts), when most
   * of it is in the file. Off by default: the multifd channels then fault in only the pages the file
   * holds, beside their reads, and QEMU answers at once (README, Benchmark). The bench compares both.
   */
  prealloc?: boolean;
}

/** What a lazy restore did (RestoreResult.lazy). */
export interface LazyRestoreInfo {
  /** The file the main RAM block is mapped from (its real path). */
  file: string;
  /** The main RAM block's id and size. */
  blockId: string;
  mappedBytes: number;
  /** Bytes QEMU loaded from the companion stream (small blocks' pages). */
  loadedBytes: number;
  prefetch: { pid?: number; reason?: string } | 'off';
}

export interface RestoreResult {
  path: string;
  bytes: number;
  ramBytes: number;
  durationMs: number;
  throughputMiBps: number;
  channels: number;
  directIO: boolean;
  directIOReason?: string;
  running: boolean;
  launched?: { pid: number; logPath: string };
  /** Milliseconds from process start to `migrate-incoming`. */
  migrateIssuedAtMs: number;
  /** With `verify`: the check of the RAM digests (before QEMU was touched; not part of durationMs). */
  verified?: DigestCheck;
  mode: 'eager' | 'lazy';
  /** A lazy restore was asked for but ran eagerly: why. */
  lazyFallbackReason?: string;
  /** An eager restore into a QEMU it launched with `prealloc` asked for: whether the guest RAM was preallocated first (prealloc.ts), or why not. */
  prealloc?: { threads: number } | { skipped: string };
  lazy?: LazyRestoreInfo;
  /** The pid of the QEMU that loaded the snapshot: the peer of the QMP connection (undefined when the kernel names none). */
  qemuPid?: number;
}

export class RestoreError extends VmsnapError {
  override name = 'RestoreError';
}

export async function restoreVm(opts: RestoreOptions): Promise<RestoreResult> {
  let early: EarlyLaunch | undefined =
    opts.lazy && opts.launch && !opts.signal?.aborted
      ? (opts.early ?? (await earlyLazyLaunch({ inPath: opts.inPath, qmpSocket: opts.qmpSocket, ...opts.relaunch, trust: opts.trust })))
      : undefined;
  if (opts.early && !early) await abandonEarlyLaunch(opts.early);
  let snapshot: VerifiedSnapshot;
  let verified: DigestCheck | undefined;
  let lazy: LazyDecision | undefined;
  let relaunched: string[] | undefined;
  let prealloc: PreallocPlan | undefined;
  let channels: number;
  let directIO: { enabled: boolean; reason?: string };
  let realFile: string;
  // The restored VM's own disk overlays: removed again unless the restore succeeds.
  let overlays: DiskRewrite[] = [];
  const ledger = opts.ledger ?? OverlayLedger.inMemory();
  const removeOverlays = (rewrites: DiskRewrite[]) => removeOverlaysOf(rewrites, ledger);
  try {
    if (opts.verified) snapshot = opts.verified;
    else {
      // Loaded here, not at the top: a lazy restore starts QEMU while this loads.
      const { verifySnapshotFile } = await import('../snapshot-file/verify.js');
      traceStep('file checks loaded');
      snapshot = verifySnapshotFile(opts.inPath, opts.trust);
    }
    if (opts.verify) {
      // Loaded only when asked for: it brings zod, which a lazy restore keeps off its start-up path.
      const { checkDigests } = await import('../snapshot-file/check-digests.js');
      verified = await checkDigests(opts.inPath, snapshot);
    }
    traceStep('file checked');
    realFile = fs.realpathSync(opts.inPath);
    const meta = snapshot.header.metadata;
    channels = opts.channels ?? meta.stream.channels;
    if (!Number.isInteger(channels) || channels < 1 || channels > 64) {
      throw new RestoreError(`channels must be an integer from 1 to 64, got ${channels}`);
    }
    if (opts.launch) {
      const rewrite = opts.relaunch?.rewrite;
      overlays = await createRestoreOverlays(meta.disks ?? [], (dir) => movedPath(dir, rewrite), meta.qemu.cwd, ledger);
      relaunched = relaunchArgv(meta.qemu.argv, meta.vm.qmpSocket, opts.qmpSocket, [], { ...rewrite, disks: overlays });
    }
    lazy = opts.lazy ? decideLazy(snapshot, realFile, relaunched ?? opts.lazy.attach?.argv) : undefined;
    if (relaunched && !lazy?.lazy && opts.prealloc === true) prealloc = preallocPlanOf(snapshot, relaunched, channels);
    directIO = lazy?.lazy
      ? { enabled: false, reason: 'lazy restore: the RAM is mapped from the file, not read' }
      : decideDirectIO(opts.directIO, opts.inPath, 'read');
    // The checked header must say what the early launch read from it.
    if (early && (!lazy?.lazy || lazy.argv.join('\0') !== early.argv.join('\0'))) {
      const stale = early;
      early = undefined;
      await abandonEarlyLaunch(stale);
    }
  } catch (err) {
    removeOverlays(overlays);
    await abandonEarlyLaunch(early);
    throw err;
  }
  const meta = snapshot.header.metadata;
  const mapped = lazy?.lazy ? lazy : undefined;
  // Lazy: QEMU loads the companion stream; the main block's pages come from the mapping.
  // Built while the early QEMU still starts.
  let companion: CompanionStream | undefined;
  try {
    companion = mapped ? buildCompanionStream(opts.inPath, snapshot, mapped.main) : undefined;
    // The fds go to QEMU through the addon: loading it (a dlopen) while QEMU starts keeps it off the path after.
    native();
  } catch (err) {
    if (companion) fs.closeSync(companion.fd);
    removeOverlays(overlays);
    await abandonEarlyLaunch(early);
    throw err;
  }
  const fds: number[] = companion ? [companion.fd] : [];

  traceStep('decided; companion stream built');
  let client: QmpClient;
  let launched: { pid: number; logPath: string } | undefined;
  if (relaunched) {
    if (opts.signal?.aborted) {
      closeAll(fds);
      removeOverlays(overlays);
      await abandonEarlyLaunch(early);
      throw opts.signal.reason ?? new RestoreError('the restore was cancelled');
    }
    try {
      const argv = mapped?.argv ?? (prealloc?.prealloc ? prealloc.argv : relaunched);
      const q = early ? await early.launching : await launchQemu({ argv, qmpSocket: opts.qmpSocket, cwd: meta.qemu.cwd, env: opts.relaunch?.env, logPath: opts.relaunch?.logPath });
      client = q.client;
      launched = { pid: q.pid, logPath: q.logPath };
    } catch (err) {
      closeAll(fds);
      removeOverlays(overlays);
      throw err;
    }
  } else {
    const attach = opts.lazy?.attach;
    const mapping = mapped ? { ramBackendId: mapped.main.id, sizeBytes: mapped.main.usedLength, offset: mapped.main.pagesOffset } : undefined;
    client = await (attach ? attach.prepare(mapping) : Promise.resolve())
      .then(() => (opts.connect ? opts.connect() : QmpClient.connect(opts.qmpSocket)))
      .catch((err: unknown) => {
        closeAll(fds);
        throw err;
      });
  }
  let fdsetId: number | undefined;
  try {
    const settings = { channels, directIO: directIO.enabled, unlimitedBandwidth: false };
    const { O_RDONLY, O_DIRECT } = fs.constants;
    if (!companion) fds.push(fs.openSync(opts.inPath, O_RDONLY));
    if (directIO.enabled) fds.push(fs.openSync(opts.inPath, O_RDONLY | O_DIRECT));
    if (launched) {
      // A QEMU this restore started has nothing to lose: the check, the set-up and the fds share round trips.
      [, , fdsetId] = await Promise.all([
        checkTarget(client, opts.qmpSocket, snapshot),
        configureMigration(client, settings),
        addFdSet(client, fds, 'vmsnap-restore'),
      ]);
    } else {
      // Someone else's QEMU is not touched until it proved to be the right target.
      await checkTarget(client, opts.qmpSocket, snapshot);
      await configureMigration(client, settings);
      fdsetId = await addFdSet(client, fds, 'vmsnap-restore');
    }

    traceStep('migration configured');
    const started = Date.now();
    const migrateIssuedAtMs = sinceProcessStartMs();
    await client.execute('migrate-incoming', { uri: fileUri(fdsetId, snapshot.header.streamOffset), 'exit-on-error': false });
    // Started while QEMU loads the companion (a few ms): the spawn is off the path to a running VM.
    // Should the load fail, it only warms the page cache and ends by itself.
    const prefetch = mapped ? ((opts.lazy?.prefetch ?? true) ? startPrefetch(realFile, mapped.main) : 'off') : undefined;
    await opts.onMigrating?.(client);
    const outcome = await waitForLoad(client, opts, started, loadQueryTimeoutMs(snapshot.layout.blocks.reduce((sum, b) => sum + b.pagesPresent * b.pageSize, 0)));
    if (outcome.status !== 'completed') {
      throw new RestoreError(`QEMU could not load ${opts.inPath}: ${outcome['error-desc'] ?? outcome.status}`);
    }
    traceStep('loaded');
    const durationMs = Date.now() - started;
    await removeFdSet(client, fdsetId);
    fdsetId = undefined;

    const status = await queryStatus(client);
    if (!opts.paused && !status.running) await client.execute('cont');
    if (opts.paused && status.running) await client.execute('stop');
    traceStep('running');
    const bytes = companion?.pageBytes ?? snapshot.layout.blocks.reduce((sum, b) => sum + b.pagesPresent * b.pageSize, 0);
    const qemuPid = peerPid(client);
    const lazyInfo = mapped && companion && (launched || opts.lazy?.attach) ? lazyInfoOf(mapped, realFile, companion.pageBytes, prefetch ?? 'off') : undefined;
    return {
      path: opts.inPath,
      bytes,
      ramBytes: meta.ram.bytes,
      durationMs,
      throughputMiBps: throughputMiBps(bytes, durationMs),
      channels,
      directIO: directIO.enabled,
      directIOReason: directIO.reason,
      running: !opts.paused,
      launched,
      migrateIssuedAtMs,
      verified,
      mode: lazyInfo ? 'lazy' : 'eager',
      ...(lazy && !lazy.lazy ? { lazyFallbackReason: lazy.reason } : {}),
      ...(prealloc ? { prealloc: prealloc.prealloc ? { threads: prealloc.threads } : { skipped: prealloc.reason } } : {}),
      ...(lazyInfo ? { lazy: lazyInfo } : {}),
      ...(qemuPid ? { qemuPid } : {}),
    };
  } catch (err) {
    if (fdsetId !== undefined) await removeFdSet(client, fdsetId).catch(() => undefined);
    // A QEMU we launched holds a half-loaded VM: it is of no use to anyone.
    if (launched) {
      if (!client.closed) {
        await client.execute('quit').catch(() => undefined);
        await client.waitClosed(5_000);
      }
      removeOverlays(overlays);
    }
    throw err;
  } finally {
    closeAll(fds);
    client.close();
  }
}

/** Waits for QEMU's load, bounded by what its process really reads (when the kernel names the process). */
async function waitForLoad(client: QmpClient, opts: RestoreOptions, started: number, queryTimeoutMs: number): Promise<MigrationInfo> {
  const pid = peerPid(client);
  const stallMs = opts.stallMs ?? DEFAULT_STALL_TIMEOUT_SECONDS * 1000;
  const watch = pid ? watchProgress(processReadMeasure(pid, () => client.sentBytes), { stallMs, what: 'restore', onStall: opts.onStalled }) : undefined;
  try {
    return await waitForMigration(client, { pollMs: opts.pollMs ?? 10, startedAt: started, signal: eitherSignal(opts.signal, watch?.signal), queryTimeoutMs });
  } finally {
    watch?.stop();
  }
}

/**
 * QEMU loads the RAM section on its main thread, which answers QMP only once the channels have read
 * every page: query-migrate goes unanswered for the whole load. The channels fault the guest RAM in as
 * they read, so on a node where first touching memory is slow the load runs at that speed, not the
 * disk's. A QEMU is taken for hung only when it is silent longer than its bytes take at 8 MiB/s.
 */
export function loadQueryTimeoutMs(bytes: number): number {
  return Math.max(30_000, Math.ceil(bytes / (8 << 20)) * 1000);
}

function peerPid(client: QmpClient): number | undefined {
  try {
    const pid = client.peerCredentials().pid;
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds.splice(0)) fs.closeSync(fd);
}

function preallocPlanOf(snapshot: VerifiedSnapshot, relaunched: string[], channels: number): PreallocPlan {
  const id = snapshot.header.metadata.ram.mainBlockId;
  const main = snapshot.layout.blocks.find((b) => b.id === id);
  if (!main) return { prealloc: false, reason: 'the snapshot does not record its main RAM block' };
  return planPreallocArgv(relaunched, main, channels);
}

function lazyInfoOf(
  mapped: Extract<LazyDecision, { lazy: true }>,
  file: string,
  loadedBytes: number,
  prefetch: LazyRestoreInfo['prefetch'],
): LazyRestoreInfo {
  return {
    file,
    blockId: mapped.main.id,
    mappedBytes: mapped.main.usedLength,
    loadedBytes,
    prefetch,
  };
}

/** Refuses a QEMU that is not waiting for this snapshot, before anything is loaded. */
async function checkTarget(client: QmpClient, socket: string, snapshot: VerifiedSnapshot): Promise<void> {
  const meta = snapshot.header.metadata;
  // One round trip: QMP answers pipelined commands in order (a launched QEMU is waiting on us).
  const [{ status }, incoming, machine, ram, blocks] = await Promise.all([
    queryStatus(client),
    client.execute<MigrationInfo>('query-migrate'),
    queryMachine(client),
    queryRamBytes(client),
    client.execute<BlockInfo[]>('query-block'),
  ]);
  if (status !== 'inmigrate') {
    throw new RestoreError(
      `the QEMU at ${socket} is '${status}', not waiting for a restore: start it with -incoming defer, or use --launch`,
    );
  }
  if (incoming.status !== undefined && incoming.status !== 'none' && incoming.status !== 'setup') {
    throw new RestoreError(`the QEMU at ${socket} already has an incoming migration ('${incoming.status}')`);
  }
  if (machine !== meta.qemu.machine) {
    throw new RestoreError(`the QEMU at ${socket} runs machine '${machine}'; the snapshot was saved from '${meta.qemu.machine}'`);
  }
  if (ram !== meta.ram.bytes) {
    throw new RestoreError(`the QEMU at ${socket} has ${ram} bytes of RAM; the snapshot holds ${meta.ram.bytes}`);
  }
  // A QEMU started by someone else must not write onto a frozen base: that would
  // corrupt every later restore of this snapshot.
  const bases = new Map((meta.disks ?? []).map((d) => [d.base, d]));
  for (const disk of writableDisks(blocks)) {
    const d = bases.get(disk.chain[0]!.filename);
    if (d) {
      throw new RestoreError(
        `the QEMU at ${socket} would write to ${d.base}, the snapshot's frozen disk base: start it on an overlay ` +
          `(qemu-img create -f qcow2 -b ${d.base} -F ${d.baseFormat} OVERLAY) or use --launch`,
      );
    }
  }
}
