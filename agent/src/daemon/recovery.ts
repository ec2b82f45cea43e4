// Work a previous run of this agent left InProgress (it crashed or was
// killed). Every such object ends Succeeded or Failed, and no VM stays
// paused because of us: a save whose migration finished in QEMU is completed,
// anything else is rolled back; a restore whose QEMU loaded is kept.
import fs from 'node:fs';
import path from 'node:path';
import { AfterRestore, Phase, Reason, type LazyRestoreStatus, type VMRestore, type VMSnapshot } from '../../../api/index.js';
import { finishSnapshotFile, allocatedBytes, drainMigration, eitherSignal, waitForMigration, fileWriteMeasure, processReadMeasure, watchProgress, lazyBackingOf, lazyResidency, type MigrationInfo } from '../engine/index.js';
import type { QmpClient } from '../qmp/client.js';
import type { SnapshotHeader } from '../snapshot-file/header.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';
import { readHeader } from '../snapshot-file/read.js';
import { headerTrust } from './header-trust.js';
import { cancellationOf } from './cancellation.js';
import type { Completion } from './completion.js';
import type { AgentContext } from './context.js';
import { isReallyUnder, vmDir } from './paths.js';
import { fdSetsWithOpaque, peerPid, probeQmp, probeQmpPatiently, processArgv, processEnvVar, quitQemu, removeFdSets } from './qemu-control.js';
import { RESTORE_UID_ENV } from './restore-runner.js';
import { runningLazyStatus } from './lazy-residency.js';
import { isPodVms, type PodVms } from '../vm/pod-vms.js';
import { peerIdentity, readPeerProcess, sameProcess } from '../vm/process-identity.js';
import { failedStatus, restoreRecoveredStatus, saveSummary, snapshotSucceededStatus, type SaveOutcome } from './status.js';

/** A drain after an agent restart ends when the file stops growing (a tenant's QMP may report a save forever). */
function drainBound(ctx: AgentContext, file: string): Parameters<typeof drainMigration>[1] {
  return { stall: { measure: fileWriteMeasure(file), stallMs: ctx.config.stallTimeoutSeconds * 1000 } };
}

/** The load a previous agent started, bounded by what the QEMU process still reads. */
async function waitForLoadAgain(ctx: AgentContext, client: QmpClient, signal: AbortSignal): Promise<MigrationInfo> {
  const pid = peerPid(client);
  const measure = pid ? processReadMeasure(pid, () => client.sentBytes) : undefined;
  const watch = measure ? watchProgress(measure, { stallMs: ctx.config.stallTimeoutSeconds * 1000, what: 'restore' }) : undefined;
  try {
    return await waitForMigration(client, { pollMs: 100, startedAt: Date.now(), signal: eitherSignal(signal, watch?.signal) });
  } finally {
    watch?.stop();
  }
}

const ACTIVE = ['setup', 'active', 'device', 'pre-switchover', 'wait-unplug', 'postcopy-active', 'cancelling'];
const SAVE_OPAQUE = 'vmsnap-save';
const RESTORE_OPAQUE = 'vmsnap-restore';

// ---- snapshots ----------------------------------------------------------------------------------

export async function recoverSnapshot(ctx: AgentContext, snap: VMSnapshot): Promise<Completion> {
  const retry = 'create a new VMSnapshot to retry';
  const fail = (message: string): Completion => {
    const text = `the agent restarted during the save; ${message}`;
    return { status: failedStatus(snap, Reason.AgentRestarted, text, new Date()), event: { type: 'Warning', reason: 'SaveFailed', message: text } };
  };
  const file = snap.status?.file?.path;
  if (!file || !isReallyUnder(ctx.config.storageRoot, file)) return fail(retry);
  let header: SnapshotHeader;
  const trust = headerTrust(ctx.config.storageRoot, snap);
  try {
    // With the key even while incomplete: the tenant's QEMU held the file while the agent was down.
    header = readHeader(file, trust);
  } catch {
    await fs.promises.rm(file, { force: true }); // not even a header: nothing was saved
    return fail(retry);
  }
  const meta = header.metadata;
  if (isPodVms(ctx.discovery)) return recoverPodSnapshot(ctx, snap, file, meta, fail);
  const client = await connectSavedQemu(ctx, snap, meta);
  try {
    if (header.state === 'complete') {
      const note = client ? await settleAfterSave(client, meta) : '';
      return succeeded(snap, outcomeFromHeader(file, meta), ` (completed before the agent restarted${note})`);
    }
    if (client) {
      let migration = await client.execute<MigrationInfo>('query-migrate');
      const ours = (await fdSetsWithOpaque(client, SAVE_OPAQUE)).length > 0;
      // Held before switchover for the disk freeze, which may not have happened: never finish that file.
      const freezeUnsure = migration.status === 'pre-switchover';
      if (ours && migration.status && ACTIVE.includes(migration.status)) {
        // Cancelling can crash QEMU (see drainMigration): let the save finish, then keep it.
        await drainMigration(client, drainBound(ctx, file));
        migration = await client.execute<MigrationInfo>('query-migrate');
      }
      if (migration.status === 'completed' && ours && !freezeUnsure) {
        try {
          finishFile(file, meta, migration, trust.key);
          const note = await settleAfterSave(client, meta);
          return succeeded(snap, outcomeFromHeader(file, meta), ` (QEMU finished the save across an agent restart${note})`);
        } catch (err) {
          ctx.log.warn({ err: String(err), file }, 'cannot complete the snapshot file left by the previous agent');
        }
      }
      if (migration.status && ACTIVE.includes(migration.status)) await drainMigration(client, drainBound(ctx, file));
      await removeFdSets(client, SAVE_OPAQUE);
      const resumed = await resumeIfWasRunning(client, meta);
      await fs.promises.rm(file, { force: true });
      return fail(`the partial file was removed${resumed ? ' and the VM resumed' : ''}; ${retry}`);
    }
    await fs.promises.rm(file, { force: true });
    return fail(`the VM's QEMU is gone or was restarted; the partial file was removed; ${retry}`);
  } finally {
    client?.close();
  }
}

/**
 * A VM pod's save interrupted by an agent restart always ends Failed: the file was written by the
 * tenant's QEMU while no agent watched it, so it is not completed after the fact. The save still
 * running in QEMU is ended (drained: cancelling a mapped-ram save can crash QEMU), the fds are
 * taken back, the VM resumed if it was running before, and the file removed.
 */
async function recoverPodSnapshot(
  ctx: AgentContext,
  snap: VMSnapshot,
  file: string,
  meta: SnapshotMetadata,
  fail: (message: string) => Completion,
): Promise<Completion> {
  const retry = 'create a new VMSnapshot to retry';
  const client = await connectSavedQemu(ctx, snap, meta);
  const notes: string[] = [];
  if (client) {
    const undone = await undoSave(ctx, client, file, meta);
    if (undone.drained) notes.push('the save still running in QEMU was ended');
    if (undone.resumed) notes.push('the VM was resumed');
  } else {
    notes.push("the VM pod's QEMU is gone or was restarted");
  }
  await fs.promises.rm(file, { force: true });
  notes.push('the partial file was removed');
  return fail(`${notes.join('; ')}; ${retry}`);
}

/**
 * What a save left in the saved VM's QEMU, undone: a save it still runs is drained (cancelling a
 * mapped-ram save can crash QEMU), the save's fds are taken back, and the VM resumed if it ran
 * before. Closes `client`; says what it did.
 */
async function undoSave(ctx: AgentContext, client: QmpClient, file: string, meta: SnapshotMetadata): Promise<{ drained: boolean; resumed: boolean }> {
  try {
    const migration = await client.execute<MigrationInfo>('query-migrate');
    const drained = !!migration.status && ACTIVE.includes(migration.status) && (await fdSetsWithOpaque(client, SAVE_OPAQUE)).length > 0;
    if (drained) await drainMigration(client, drainBound(ctx, file));
    await removeFdSets(client, SAVE_OPAQUE);
    return { drained, resumed: await resumeIfWasRunning(client, meta) };
  } finally {
    client.close();
  }
}

function succeeded(snap: VMSnapshot, outcome: SaveOutcome, note: string): Completion {
  return {
    status: snapshotSucceededStatus(snap, outcome, new Date(), note) as Record<string, unknown>,
    event: { type: 'Normal', reason: 'SaveSucceeded', message: saveSummary(outcome) + note },
  };
}

/**
 * The saved VM's QEMU if it is still the process that was saved (same pid and start time: a
 * recycled pid is another process). A VM pod is found
 * again by its Pod and reached through the checked connection, never through the socket path in
 * the file's header (the tenant's QEMU could write the file).
 */
async function connectSavedQemu(ctx: AgentContext, snap: VMSnapshot, meta: SnapshotMetadata): Promise<QmpClient | undefined> {
  if (!isPodVms(ctx.discovery)) return connectSameQemu(meta.vm.qmpSocket, meta.qemu);
  const vm = await ctx.discovery.find(snap.metadata.namespace!, snap.spec.vmName);
  if (!vm) return undefined;
  const probe = await ctx.discovery.probe(vm, 2000);
  if (probe.kind !== 'answers') {
    if (probe.kind === 'unreachable') ctx.log.warn({ vm: `${vm.namespace}/${vm.name}`, message: probe.message }, 'cannot reach the saved VM pod');
    return undefined;
  }
  if (sameProcess(meta.qemu, peerIdentity(probe.client))) return probe.client;
  probe.client.close();
  return undefined;
}

/** The QEMU at `socket` if it is still the process that was saved. */
async function connectSameQemu(socket: string, saved: { pid: number; startTicks?: number }): Promise<QmpClient | undefined> {
  const probe = await probeQmp(socket, 2000);
  if (probe.kind !== 'answers') return undefined;
  if (sameProcess(saved, peerIdentity(probe.client))) return probe.client;
  probe.client.close();
  return undefined;
}

/** After a complete save: QEMU's fdset released, the VM as capture.after asked. Returns a note for the status. */
async function settleAfterSave(client: QmpClient, meta: SnapshotMetadata): Promise<string> {
  await removeFdSets(client, SAVE_OPAQUE);
  if (meta.capture.after === 'stop') {
    await quitQemu(client);
    return '; the VM was stopped (afterSnapshot: Stop)';
  }
  return (await resumeIfWasRunning(client, meta)) ? '; the VM was resumed' : '';
}

async function resumeIfWasRunning(client: QmpClient, meta: SnapshotMetadata): Promise<boolean> {
  if (!meta.capture.wasRunning) return false;
  const { running } = await client.execute<{ running: boolean }>('query-status');
  if (running) return false;
  await client.execute('cont');
  return true;
}

/** The save finished in QEMU but the header was never completed: do what saveVm would have done. */
function finishFile(file: string, meta: SnapshotMetadata, migration: MigrationInfo, key: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const created = Date.parse(meta.createdAt);
    const totalMs = migration['total-time'] ?? 0;
    const bytes = migration.ram?.transferred ?? 0;
    finishSnapshotFile(fd, file, meta, () => {
      const now = Date.now();
      const pausedSince = meta.capture.mode === 'Live' ? created + totalMs - (migration.downtime ?? 0) : created;
      return {
        durationMs: totalMs,
        migrateMs: totalMs,
        syncMs: 0,
        vmPausedMs: meta.capture.wasRunning ? Math.max(0, now - pausedSince) : 0,
        bytesWritten: bytes,
        throughputMiBps: totalMs > 0 ? Math.round((bytes / (1 << 20) / (totalMs / 1000)) * 10) / 10 : 0,
      };
    }, key);
  } finally {
    fs.closeSync(fd);
  }
}

function outcomeFromHeader(file: string, meta: SnapshotMetadata): SaveOutcome {
  const stat = fs.statSync(file);
  return {
    path: file,
    bytes: meta.stats?.bytesWritten ?? 0,
    ramBytes: meta.ram.bytes,
    durationMs: meta.stats?.durationMs ?? 0,
    vmPausedMs: meta.stats?.vmPausedMs ?? 0,
    directIO: meta.stream.directIO,
    directIOReason: meta.stream.directIOReason,
    logicalBytes: meta.stream.endOffset ?? stat.size,
    allocatedBytes: allocatedBytes(stat),
    qemu: { version: meta.qemu.version, machine: meta.qemu.machine },
    disks: meta.disks,
  };
}

// ---- restores ----------------------------------------------------------------------------------

export async function recoverRestore(ctx: AgentContext, restore: VMRestore, signal: AbortSignal): Promise<Completion> {
  const ns = restore.metadata.namespace!;
  const effective = restore.status!.effective!;
  const target = `${ns}/${effective.targetVMName}`;
  const fail = (message: string, reason: Reason = Reason.AgentRestarted): Completion => {
    const text = `the agent restarted during the restore; ${message}`;
    return { status: failedStatus(restore, reason, text, new Date()), event: { type: 'Warning', reason: 'RestoreFailed', message: text } };
  };
  if (isPodVms(ctx.discovery)) return recoverPodRestore(ctx, ctx.discovery, restore, signal, fail);
  const socket = (await ctx.discovery.find(ns, effective.targetVMName))?.qmpSocket ?? path.join(vmDir(ctx.config.vmRoot, ns, effective.targetVMName), 'qmp.sock');
  // A QEMU still loading the snapshot answers QMP only now and then: ask until it does.
  const probe = await probeQmpPatiently(socket, signal);
  if (probe.kind !== 'answers') {
    const c = cancellationOf(signal);
    if (c?.kind === 'shutdown') return { status: {}, skipStatus: true, event: { type: 'Normal', reason: 'RestoreInterrupted', message: c.message } };
    return fail(`no QEMU answers for VM ${target} (${probe.message}); create a new VMRestore to retry`, c?.reason);
  }
  const client = probe.client;
  try {
    const pid = peerPid(client);
    if (!launchedForPeer(client, restore.metadata.uid)) {
      return fail(`it had not launched the restored VM yet (the QEMU at ${socket} is not the restore's); create a new VMRestore to retry`);
    }
    let { status } = await client.execute<{ status: string }>('query-status');
    if (status === 'inmigrate') {
      let migration = await client.execute<MigrationInfo>('query-migrate');
      if (migration.status && ACTIVE.includes(migration.status)) {
        ctx.log.info({ vm: target, socket }, 'waiting for the load that was running when the agent restarted');
        try {
          migration = await waitForLoadAgain(ctx, client, signal);
        } catch (err) {
          const c = cancellationOf(signal);
          if (c?.kind === 'shutdown') return { status: {}, skipStatus: true, event: { type: 'Normal', reason: 'RestoreInterrupted', message: c.message } };
          await quitQemu(client);
          return fail(`${c?.message ?? (err as Error).message}; the QEMU it launched was stopped`, c?.reason);
        }
      }
      if (migration.status !== 'completed') {
        await quitQemu(client);
        const why = migration.status === 'failed' ? `QEMU could not load the snapshot: ${migration['error-desc'] ?? 'no reason given'}` : 'the load had not started';
        return fail(`${why}; the QEMU it launched was stopped; create a new VMRestore to retry`);
      }
      ({ status } = await client.execute<{ status: string }>('query-status'));
    }
    if (status !== 'running' && status !== 'paused') {
      await quitQemu(client);
      return fail(`the restored QEMU is '${status}'; it was stopped; create a new VMRestore to retry`);
    }
    await removeFdSets(client, RESTORE_OPAQUE);
    let running = status === 'running';
    if (effective.afterRestore === AfterRestore.Running && !running) {
      await client.execute('cont');
      running = true;
    }
    const started = Date.parse(restore.status?.startTime ?? '') || Date.now();
    const note = ' (completed across an agent restart: duration and downtime include the restart)';
    const recovered = { durationMs: Date.now() - started, ramBytes: await ramBytes(client), running, target, ...recoveredLazy(pid, effective.restoreMode) };
    return {
      status: restoreRecoveredStatus(restore, recovered, new Date(), note) as Record<string, unknown>,
      event: { type: 'Normal', reason: 'RestoreSucceeded', message: `restored VM ${target}; VM ${running ? 'running' : 'paused'}${note}` },
    };
  } finally {
    client.close();
  }
}

/**
 * A VM pod's restore interrupted by an agent restart. The pod's QEMU is the launcher's: the agent
 * only finishes a load it can see in QEMU (its fdset still there) and otherwise ends the
 * VMRestore Failed, leaving the QEMU to its pod.
 */
/** How long an interrupted pod restore waits for the pod's QEMU to answer again. */
const POD_RECOVERY_WAIT_MS = 60_000;

async function recoverPodRestore(
  ctx: AgentContext,
  finder: PodVms,
  restore: VMRestore,
  signal: AbortSignal,
  fail: (message: string, reason?: Reason) => Completion,
): Promise<Completion> {
  const ns = restore.metadata.namespace!;
  const effective = restore.status!.effective!;
  const target = `${ns}/${effective.targetVMName}`;
  const retry = 'create a new VMRestore to retry';
  const vm = await finder.find(ns, effective.targetVMName);
  if (!vm) return fail(`VM pod ${target} is no longer Running on node ${ctx.nodeName}; ${retry}`);
  // The launcher may still be restarting QEMU for this restore (up to its stop grace plus its
  // QMP ready timeout, 40 s by default): wait for it unless it says no QEMU runs at all.
  const deadline = Date.now() + POD_RECOVERY_WAIT_MS;
  let probe = await finder.probe(vm, 5000);
  while (probe.kind !== 'answers' && !(probe.kind === 'absent' && probe.stopped) && !signal.aborted && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    probe = await finder.probe(vm, 5000);
  }
  if (probe.kind !== 'answers') {
    const c = cancellationOf(signal);
    if (c?.kind === 'shutdown') return { status: {}, skipStatus: true, event: { type: 'Normal', reason: 'RestoreInterrupted', message: c.message } };
    return fail(`the QEMU of VM pod ${target} does not answer (${probe.message}); ${retry}`, c?.reason);
  }
  const client = probe.client;
  try {
    const { status } = await client.execute<{ status: string }>('query-status');
    const ours = (await fdSetsWithOpaque(client, RESTORE_OPAQUE)).length > 0;
    if (status !== 'inmigrate' || !ours) {
      return fail(`the QEMU of VM pod ${target} is '${String(status).slice(0, 32)}' and shows no load of this restore; check the VM; ${retry}`);
    }
    let migration = await client.execute<MigrationInfo>('query-migrate');
    if (migration.status && ACTIVE.includes(migration.status)) {
      try {
        migration = await waitForLoadAgain(ctx, client, signal);
      } catch (err) {
        const c = cancellationOf(signal);
        if (c?.kind === 'shutdown') return { status: {}, skipStatus: true, event: { type: 'Normal', reason: 'RestoreInterrupted', message: c.message } };
        return fail(`${c?.message ?? (err as Error).message}; the VM pod's QEMU waits for a restore; ${retry}`, c?.reason);
      }
    }
    await removeFdSets(client, RESTORE_OPAQUE);
    if (migration.status !== 'completed') {
      return fail(`the load had not finished (migration '${String(migration.status ?? 'none').slice(0, 32)}'); the VM pod's QEMU waits for a restore; ${retry}`);
    }
    const after = (await client.execute<{ status: string; running: boolean }>('query-status')).running;
    let running = after;
    if (effective.afterRestore === AfterRestore.Running && !running) {
      await client.execute('cont');
      running = true;
    }
    const started = Date.parse(restore.status?.startTime ?? '') || Date.now();
    const note = ' (completed across an agent restart: duration and downtime include the restart)';
    const recovered = { durationMs: Date.now() - started, ramBytes: await ramBytes(client), running, target };
    return {
      status: restoreRecoveredStatus(restore, recovered, new Date(), note) as Record<string, unknown>,
      event: { type: 'Normal', reason: 'RestoreSucceeded', message: `restored VM pod ${target}; VM ${running ? 'running' : 'paused'}${note}` },
    };
  } finally {
    client.close();
  }
}

/** launchedFor, read from /proc of the very process on the other end of the connection. */
function launchedForPeer(client: QmpClient, uid: string | undefined): boolean {
  const pid = peerPid(client);
  if (pid === undefined) return false;
  try {
    return readPeerProcess(client.socketFd(), pid, (p) => launchedFor(p, uid));
  } catch {
    return false;
  }
}

/** Did the agent launch this QEMU for restore `uid`? Falls back to its command line when the environment is unreadable. */
function launchedFor(pid: number | undefined, uid: string | undefined): boolean {
  if (pid === undefined || !uid) return false;
  const tag = processEnvVar(pid, RESTORE_UID_ENV);
  if (tag !== undefined) return tag === uid;
  if (fs.existsSync(`/proc/${pid}/environ`)) {
    try {
      fs.readFileSync(`/proc/${pid}/environ`);
      return false; // readable, and no tag: not launched by the agent
    } catch {
      // unreadable: judge by the command line
    }
  }
  const argv = processArgv(pid) ?? [];
  return argv.includes('-incoming') && argv[argv.indexOf('-incoming') + 1] === 'defer';
}

/** For restoreMode Lazy: what the QEMU's command line says it became (the agent that knew is gone). */
function recoveredLazy(pid: number | undefined, mode: 'Eager' | 'Lazy'): { mode?: 'eager' | 'lazy'; lazyFallbackReason?: string; lazy?: LazyRestoreStatus } {
  if (mode !== 'Lazy' || pid === undefined) return {};
  const backing = lazyBackingOf(processArgv(pid) ?? []);
  if (!backing) return { mode: 'eager', lazyFallbackReason: 'the restore ran eagerly (its reason was lost in the agent restart)' };
  return { mode: 'lazy', lazy: runningLazyStatus(backing.file, backing.size, lazyResidency(pid, backing.file), new Date()) };
}

async function ramBytes(client: QmpClient): Promise<number> {
  const m = await client.execute<{ 'base-memory': number; 'plugged-memory'?: number }>('query-memory-size-summary');
  return m['base-memory'] + (m['plugged-memory'] ?? 0);
}

// ---- leftovers of work the operator failed while no agent was watching ---------------------------

/** Does this Failed VMSnapshot still have a file on the node (a save interrupted with the agent down)? */
export function hasLeftoverFile(ctx: AgentContext, snap: VMSnapshot): boolean {
  const file = snap.status?.file?.path;
  return snap.status?.phase === Phase.Failed && !!file && isReallyUnder(ctx.config.storageRoot, file) && fs.existsSync(file);
}

/** Rolls back what an interrupted save left: the migration drained, the VM resumed, the file removed. Status untouched. */
export async function cleanUpFailedSnapshot(ctx: AgentContext, snap: VMSnapshot): Promise<Completion> {
  const file = snap.status!.file!.path;
  ctx.log.info({ file }, 'cleaning up after a save that failed while no agent watched it');
  let meta: SnapshotMetadata | undefined;
  try {
    meta = readHeader(file, headerTrust(ctx.config.storageRoot, snap)).metadata;
  } catch {
    meta = undefined;
  }
  const notes: string[] = [];
  if (meta) {
    const client = await connectSavedQemu(ctx, snap, meta);
    if (client) {
      const undone = await undoSave(ctx, client, file, meta);
      if (undone.drained) notes.push('let the save still running in QEMU finish and discarded it');
      if (undone.resumed) notes.push('resumed the VM');
    }
  }
  await fs.promises.rm(file, { force: true });
  notes.push(`removed ${file}`);
  return {
    status: {},
    skipStatus: true,
    event: { type: 'Normal', reason: 'SaveCleanedUp', message: `the save failed while the agent was down; the agent ${notes.join(', ')}` },
  };
}

/** A Failed VMRestore whose QEMU (launched by the agent for it) is still waiting or loading: stop it. */
export async function cleanUpFailedRestore(ctx: AgentContext, restore: VMRestore): Promise<Completion | undefined> {
  const ns = restore.metadata.namespace!;
  const targetName = restore.status?.effective?.targetVMName;
  if (!targetName) return undefined;
  // A VM pod's QEMU belongs to its pod: a half-loaded one waits for the next restore.
  if (isPodVms(ctx.discovery)) return undefined;
  const socket = (await ctx.discovery.find(ns, targetName))?.qmpSocket ?? path.join(vmDir(ctx.config.vmRoot, ns, targetName), 'qmp.sock');
  const probe = await probeQmp(socket, 1000);
  if (probe.kind !== 'answers') return undefined;
  const client = probe.client;
  try {
    if (!launchedForPeer(client, restore.metadata.uid)) return undefined;
    const { status } = await client.execute<{ status: string }>('query-status');
    if (status !== 'inmigrate') return undefined;
    await quitQemu(client);
    return {
      status: {},
      skipStatus: true,
      event: { type: 'Normal', reason: 'RestoreCleanedUp', message: `the restore failed; the agent stopped the half-loaded QEMU at ${socket}` },
    };
  } finally {
    client.close();
  }
}
