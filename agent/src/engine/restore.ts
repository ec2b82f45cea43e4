// Restores a snapshot into a QEMU waiting with -incoming defer: attached to
// one the VM's owner started, or launched from the snapshot's recorded
// command line. The file is checked before QEMU is touched.
import fs from 'node:fs';
import { QmpClient } from '../qmp/client.js';
import { native } from '../native.js';
import { traceStep } from '../clock.js';
import { closeFds, withCleanup, type CleanupStack, type Registered } from '../cleanup-stack.js';
import type { VerifiedSnapshot } from '../snapshot-file/verify.js';
import type { DigestCheck } from '../snapshot-file/check-digests.js';
import type { DirectIOMode } from '../snapshot-file/metadata.js';
import type { HeaderTrust } from '../snapshot-file/header.js';
import { OverlayLedger } from './overlay-ledger.js';
import { decideDirectIO } from './direct-io.js';
import { throughputMiBps } from '../../../api/format.js';
import { launchQemu, movedPath, relaunchArgv, type ArgvRewrite } from './launch.js';
import { createRestoreOverlays, removeOverlays, writableDisks, type BlockInfo } from './disks.js';
import {
  addFdSet,
  configureMigration,
  eitherSignal,
  fileUri,
  removeFdSet,
  waitForMigration,
  type MigrationInfo,
  type FileTransferResult,
} from './migration.js';
import { queryMachine, queryRamBytes, queryStatus } from './qemu-info.js';
import { buildCompanionStream, type CompanionStream } from './lazy/companion.js';
import { decideLazy, type LazyDecision } from './lazy/decide.js';
import { abandonEarlyLaunch, earlyLazyLaunch, type EarlyLaunch } from './lazy/early-launch.js';
import { startPrefetch } from './lazy/prefetch.js';
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
  /**
   * With launch: a QEMU the caller already started (same socket and relaunch), from the command
   * line it expects the checked header to give: earlyLazyLaunch's for a lazy restore, the plain
   * relaunch (no disks) for an eager one. Used only when the checked file agrees, else quit.
   */
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

export interface RestoreResult extends FileTransferResult {
  running: boolean;
  launched?: { pid: number; logPath: string };
  /** With `verify`: the check of the RAM digests (before QEMU was touched; not part of durationMs). */
  verified?: DigestCheck;
  mode: 'eager' | 'lazy';
  /** A lazy restore was asked for but ran eagerly: why. */
  lazyFallbackReason?: string;
  lazy?: LazyRestoreInfo;
  /** The pid of the QEMU that loaded the snapshot: the peer of the QMP connection (undefined when the kernel names none). */
  qemuPid?: number;
}

export class RestoreError extends VmsnapError {
  override name = 'RestoreError';
}

/**
 * Seams for tests and the bench, apart from the options: the CLI and the agent pass none. How long
 * the CLI takes to start is in its trace instead (VMSNAP_TRACE=1: the step 'migrate-incoming issued').
 */
export interface RestoreHooks {
  /** Called right after QEMU accepted `migrate-incoming` (tests act on QEMU while it loads). */
  onMigrating?: (client: QmpClient) => Promise<void> | void;
  /**
   * An eager restore into a QEMU it launches: the command line to start instead of `argv`, the
   * recorded one (the bench's variant with the guest RAM preallocated, bench/prealloc.ts).
   */
  launchArgv?: (argv: string[], snapshot: VerifiedSnapshot, channels: number) => string[];
}

/** What the checked file says this restore does, decided before QEMU is touched (lazily: while an early QEMU starts). */
interface RestorePlan {
  snapshot: VerifiedSnapshot;
  verified?: DigestCheck;
  realFile: string;
  channels: number;
  directIO: { enabled: boolean; reason?: string };
  /** With launch: the command line QEMU starts from, its disks on fresh overlays (removed unless the restore succeeds). */
  relaunched?: string[];
  overlays?: Registered;
  lazy?: LazyDecision;
  /** The lazy decision when the restore is lazy. */
  mapped?: Extract<LazyDecision, { lazy: true }>;
  /** An early QEMU that the checked header agrees with, quit unless it is used. */
  early?: { launch: EarlyLaunch; abandon: Registered };
}

/** The QEMU the file is loaded into, and whether this restore launched it (then quit unless the restore succeeds). */
interface Target {
  client: QmpClient;
  launched?: { pid: number; logPath: string };
  quitting?: Registered;
}

/** What QEMU reads: the companion stream of a lazy restore or the file, then an O_DIRECT fd of it; closed whatever happens. */
interface Streams {
  fds: number[];
  companion?: CompanionStream;
}

/**
 * Named steps over one clean-up stack: each registers what undoes it, so a failure anywhere
 * quits a QEMU this restore started, removes its overlays and closes every fd, and a
 * success keeps the QEMU and its overlays.
 */
export async function restoreVm(opts: RestoreOptions, hooks: RestoreHooks = {}): Promise<RestoreResult> {
  return withCleanup(async (undo) => {
    const early = await startEarly(opts, undo);
    const plan = await planRestore(opts, undo, early);
    const streams = openStreams(opts, plan, undo);
    traceStep(`decided; companion stream built; direct I/O ${plan.directIO.enabled ? 'on' : `off (${plan.directIO.reason})`}`);
    const target = plan.relaunched ? await launchTarget(opts, hooks, plan, plan.relaunched, undo) : await attachTarget(opts, plan, undo);
    const loaded = await load(opts, hooks, plan, streams, target, undo);
    await setRunState(target.client, !!opts.paused);
    target.quitting?.keep();
    plan.overlays?.keep();
    return resultOf(opts, plan, streams, target, loaded);
  });
}

/**
 * A launched restore uses the caller's early QEMU, or (lazy) starts one from the raw header while
 * the file is checked; it is quit unless it is used.
 */
async function startEarly(opts: RestoreOptions, undo: CleanupStack): Promise<RestorePlan['early']> {
  const launch =
    opts.launch && !opts.signal?.aborted
      ? (opts.early ?? (opts.lazy ? await earlyLazyLaunch({ inPath: opts.inPath, qmpSocket: opts.qmpSocket, ...opts.relaunch, trust: opts.trust }) : undefined))
      : undefined;
  if (opts.early && !launch) await abandonEarlyLaunch(opts.early);
  return launch ? { launch, abandon: undo.defer('quit the early QEMU', () => abandonEarlyLaunch(launch)) } : undefined;
}

/** Checks the file, then decides channels, disks, lazy or eager, and direct I/O. */
async function planRestore(opts: RestoreOptions, undo: CleanupStack, early: RestorePlan['early']): Promise<RestorePlan> {
  const snapshot = opts.verified ?? (await checkFile(opts));
  let verified: DigestCheck | undefined;
  if (opts.verify) {
    // Loaded only when asked for: it brings zod, which a lazy restore keeps off its start-up path.
    const { checkDigests } = await import('../snapshot-file/check-digests.js');
    verified = await checkDigests(opts.inPath, snapshot);
  }
  traceStep('file checked');
  const realFile = fs.realpathSync(opts.inPath);
  const meta = snapshot.header.metadata;
  const channels = opts.channels ?? meta.stream.channels;
  if (!Number.isInteger(channels) || channels < 1 || channels > 64) {
    throw new RestoreError(`channels must be an integer from 1 to 64, got ${channels}`);
  }
  let relaunched: string[] | undefined;
  let overlays: Registered | undefined;
  if (opts.launch) {
    const rewrite = opts.relaunch?.rewrite;
    const ledger = opts.ledger ?? OverlayLedger.inMemory();
    // The restored VM's own disk overlays.
    const disks = await createRestoreOverlays(meta.disks ?? [], (dir) => movedPath(dir, rewrite), meta.qemu.cwd, ledger);
    overlays = undo.defer("remove the restore's disk overlays", () => removeOverlays(disks, ledger));
    relaunched = relaunchArgv(meta.qemu.argv, meta.vm.qmpSocket, opts.qmpSocket, [], { ...rewrite, disks });
  }
  const lazy = opts.lazy ? decideLazy(snapshot, realFile, relaunched ?? opts.lazy.attach?.argv) : undefined;
  const mapped = lazy?.lazy ? lazy : undefined;
  const directIO = mapped
    ? { enabled: false, reason: 'lazy restore: the RAM is mapped from the file, not read' }
    : decideDirectIO(opts.directIO, opts.inPath, 'read');
  // The checked header must say what the early launch read from it.
  const wanted = mapped?.argv ?? relaunched;
  const agreed = early && wanted && wanted.join('\0') === early.launch.argv.join('\0') ? early : undefined;
  if (early && !agreed) await early.abandon.now();
  return { snapshot, verified, realFile, channels, directIO, relaunched, overlays, lazy, mapped, early: agreed };
}

async function checkFile(opts: RestoreOptions): Promise<VerifiedSnapshot> {
  // Loaded here, not at the top: a lazy restore starts QEMU while this loads.
  const { verifySnapshotFile } = await import('../snapshot-file/verify.js');
  traceStep('file checks loaded');
  return verifySnapshotFile(opts.inPath, opts.trust);
}

/** Lazy: the companion stream QEMU loads (the main block's pages come from the mapping), built while the early QEMU still starts. */
function openStreams(opts: RestoreOptions, plan: RestorePlan, undo: CleanupStack): Streams {
  const fds: number[] = [];
  undo.defer(`close ${opts.inPath}`, () => closeFds(fds));
  const companion = plan.mapped ? buildCompanionStream(opts.inPath, plan.snapshot, plan.mapped.main) : undefined;
  if (companion) fds.push(companion.fd);
  // The fds go to QEMU through the addon: loading it (a dlopen) while QEMU starts keeps it off the path after.
  native();
  return { fds, companion };
}

/** QEMU started from the snapshot's command line (or the early one); it holds a half-loaded VM until the load succeeds. */
async function launchTarget(opts: RestoreOptions, hooks: RestoreHooks, plan: RestorePlan, relaunched: string[], undo: CleanupStack): Promise<Target> {
  if (opts.signal?.aborted) throw opts.signal.reason ?? new RestoreError('the restore was cancelled');
  const meta = plan.snapshot.header.metadata;
  const argv = plan.mapped?.argv ?? hooks.launchArgv?.(relaunched, plan.snapshot, plan.channels) ?? relaunched;
  const q = plan.early
    ? await plan.early.launch.launching
    : await launchQemu({ argv, qmpSocket: opts.qmpSocket, cwd: meta.qemu.cwd, env: opts.relaunch?.env, logPath: opts.relaunch?.logPath });
  plan.early?.abandon.keep();
  undo.defer('close the QMP connection', () => q.client.close());
  // A QEMU we launched holds a half-loaded VM: it is of no use to anyone.
  const quitting = undo.defer('quit the launched QEMU', async () => {
    if (q.client.closed) return;
    await q.client.execute('quit').catch(() => undefined);
    await q.client.waitClosed(5_000);
  });
  return { client: q.client, launched: { pid: q.pid, logPath: q.logPath }, quitting };
}

/** The caller's QEMU, waiting with -incoming defer (a VM pod's launcher prepares it once the decision is made). */
async function attachTarget(opts: RestoreOptions, plan: RestorePlan, undo: CleanupStack): Promise<Target> {
  const attach = opts.lazy?.attach;
  const main = plan.mapped?.main;
  if (attach) await attach.prepare(main ? { ramBackendId: main.id, sizeBytes: main.usedLength, offset: main.pagesOffset } : undefined);
  const client = await (opts.connect ? opts.connect() : QmpClient.connect(opts.qmpSocket));
  undo.defer('close the QMP connection', () => client.close());
  return { client };
}

/** Checks the target, sets the migration up, hands QEMU the file and waits for the load. */
async function load(
  opts: RestoreOptions,
  hooks: RestoreHooks,
  plan: RestorePlan,
  streams: Streams,
  { client, launched }: Target,
  undo: CleanupStack,
): Promise<{ durationMs: number; prefetch?: LazyRestoreInfo['prefetch'] }> {
  const { snapshot, directIO, mapped } = plan;
  const settings = { channels: plan.channels, directIO: directIO.enabled, unlimitedBandwidth: false };
  const { O_RDONLY, O_DIRECT } = fs.constants;
  if (!streams.companion) streams.fds.push(fs.openSync(opts.inPath, O_RDONLY));
  if (directIO.enabled) streams.fds.push(fs.openSync(opts.inPath, O_RDONLY | O_DIRECT));
  let fdsetId: number;
  if (launched) {
    // A QEMU this restore started has nothing to lose: the check, the set-up and the fds share round trips.
    [, , fdsetId] = await Promise.all([
      checkTarget(client, opts.qmpSocket, snapshot),
      configureMigration(client, settings),
      addFdSet(client, streams.fds, 'vmsnap-restore'),
    ]);
  } else {
    // Someone else's QEMU is not touched until it proved to be the right target.
    await checkTarget(client, opts.qmpSocket, snapshot);
    await configureMigration(client, settings);
    fdsetId = await addFdSet(client, streams.fds, 'vmsnap-restore');
  }
  const fdset = undo.defer(`remove fdset ${fdsetId}`, () => removeFdSet(client, fdsetId).catch(() => undefined));

  traceStep('migrate-incoming issued');
  const started = Date.now();
  await client.execute('migrate-incoming', { uri: fileUri(fdsetId, snapshot.header.streamOffset), 'exit-on-error': false });
  // Started while QEMU loads the companion (a few ms): the spawn is off the path to a running VM.
  // Should the load fail, it only warms the page cache and ends by itself.
  const prefetch = mapped ? ((opts.lazy?.prefetch ?? true) ? startPrefetch(plan.realFile, mapped.main) : 'off') : undefined;
  await hooks.onMigrating?.(client);
  const outcome = await waitForLoad(client, opts, started, loadQueryTimeoutMs(presentBytes(snapshot)));
  if (outcome.status !== 'completed') {
    throw new RestoreError(`QEMU could not load ${opts.inPath}: ${outcome['error-desc'] ?? outcome.status}`);
  }
  traceStep('loaded');
  const durationMs = Date.now() - started;
  await removeFdSet(client, fdsetId);
  fdset.keep();
  return { durationMs, prefetch };
}

/** Resumes the loaded VM, or leaves it paused as asked. */
async function setRunState(client: QmpClient, paused: boolean): Promise<void> {
  const status = await queryStatus(client);
  if (!paused && !status.running) await client.execute('cont');
  if (paused && status.running) await client.execute('stop');
  traceStep('running');
}

function resultOf(opts: RestoreOptions, plan: RestorePlan, { companion }: Streams, { client, launched }: Target, loaded: Awaited<ReturnType<typeof load>>): RestoreResult {
  const { snapshot, lazy, mapped, directIO } = plan;
  const bytes = companion?.pageBytes ?? presentBytes(snapshot);
  const qemuPid = peerPid(client);
  const lazyInfo = mapped && companion && (launched || opts.lazy?.attach) ? lazyInfoOf(mapped, plan.realFile, companion.pageBytes, loaded.prefetch ?? 'off') : undefined;
  return {
    path: opts.inPath,
    bytes,
    ramBytes: snapshot.header.metadata.ram.bytes,
    durationMs: loaded.durationMs,
    throughputMiBps: throughputMiBps(bytes, loaded.durationMs),
    channels: plan.channels,
    directIO: directIO.enabled,
    directIOReason: directIO.reason,
    running: !opts.paused,
    launched,
    verified: plan.verified,
    mode: lazyInfo ? 'lazy' : 'eager',
    ...(lazy && !lazy.lazy ? { lazyFallbackReason: lazy.reason } : {}),
    ...(lazyInfo ? { lazy: lazyInfo } : {}),
    ...(qemuPid ? { qemuPid } : {}),
  };
}

/** The bytes of RAM pages the file holds. */
function presentBytes(snapshot: VerifiedSnapshot): number {
  return snapshot.layout.blocks.reduce((sum, b) => sum + b.pagesPresent * b.pageSize, 0);
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
