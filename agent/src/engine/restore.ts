// Restores a snapshot into a QEMU waiting with -incoming defer: attached to
// one the VM's owner started, or launched from the snapshot's recorded
// command line. The file is checked before QEMU is touched.
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { QmpClient } from '../qmp/client.js';
import { verifySnapshotFile, type VerifiedSnapshot } from '../snapshot-file/verify.js';
import { checkDigests, type DigestCheck } from '../snapshot-file/check-digests.js';
import type { DirectIOMode } from '../snapshot-file/metadata.js';
import { decideDirectIO } from './direct-io.js';
import { throughputMiBps } from '../../../api/format.js';
import { launchQemu, movedPath, relaunchArgv, type ArgvRewrite } from './launch.js';
import { createRestoreOverlays, removeOverlays, writableDisks, type BlockInfo, type DiskRewrite } from './disks.js';
import {
  addFdSet,
  configureMigration,
  fileUri,
  removeFdSet,
  waitForMigration,
  type MigrationInfo,
} from './migration.js';
import { queryMachine, queryRamBytes, queryStatus } from './qemu-info.js';

export interface RestoreOptions {
  inPath: string;
  qmpSocket: string;
  /** Default: the channels the snapshot was saved with. */
  channels?: number;
  directIO: DirectIOMode;
  /** Start QEMU from the snapshot's command line instead of attaching. */
  launch?: boolean;
  /** Leave the VM paused after the restore. */
  paused?: boolean;
  pollMs?: number;
  onMigrating?: (client: QmpClient) => Promise<void> | void;
  /** With launch: how the recorded command line changes (a copy under another name) and extra environment. */
  relaunch?: { rewrite?: ArgvRewrite; env?: Record<string, string> };
  /** Aborting stops waiting for the load; a QEMU this call launched is quit (its VM is only half loaded). */
  signal?: AbortSignal;
  /** Verification mode: check the RAM pages against <file>.digests before QEMU is touched. */
  verify?: boolean;
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
}

export class RestoreError extends Error {
  override name = 'RestoreError';
}

export async function restoreVm(opts: RestoreOptions): Promise<RestoreResult> {
  const snapshot = verifySnapshotFile(opts.inPath);
  const verified = opts.verify ? await checkDigests(opts.inPath, snapshot) : undefined;
  const meta = snapshot.header.metadata;
  const channels = opts.channels ?? meta.stream.channels;
  if (!Number.isInteger(channels) || channels < 1 || channels > 64) {
    throw new RestoreError(`channels must be an integer from 1 to 64, got ${channels}`);
  }
  const directIO = decideDirectIO(opts.directIO, opts.inPath, 'read');

  let client: QmpClient;
  let launched: { pid: number; logPath: string } | undefined;
  // The restored VM's own disk overlays: removed again unless the restore succeeds.
  let overlays: DiskRewrite[] = [];
  if (opts.launch) {
    if (opts.signal?.aborted) throw opts.signal.reason ?? new RestoreError('the restore was cancelled');
    const rewrite = opts.relaunch?.rewrite;
    overlays = await createRestoreOverlays(meta.disks ?? [], (dir) => movedPath(dir, rewrite), meta.qemu.cwd);
    try {
      const argv = relaunchArgv(meta.qemu.argv, meta.vm.qmpSocket, opts.qmpSocket, [], { ...rewrite, disks: overlays });
      const q = await launchQemu({ argv, qmpSocket: opts.qmpSocket, cwd: meta.qemu.cwd, env: opts.relaunch?.env });
      client = q.client;
      launched = { pid: q.pid, logPath: q.logPath };
    } catch (err) {
      removeOverlays(overlays);
      throw err;
    }
  } else {
    client = await QmpClient.connect(opts.qmpSocket);
  }
  const fds: number[] = [];
  let fdsetId: number | undefined;
  try {
    await checkTarget(client, opts.qmpSocket, snapshot);
    await configureMigration(client, { channels, directIO: directIO.enabled, unlimitedBandwidth: false });
    const { O_RDONLY, O_DIRECT } = fs.constants;
    fds.push(fs.openSync(opts.inPath, O_RDONLY));
    if (directIO.enabled) fds.push(fs.openSync(opts.inPath, O_RDONLY | O_DIRECT));
    fdsetId = await addFdSet(client, fds, 'vmsnap-restore');

    const started = Date.now();
    const migrateIssuedAtMs = performance.now();
    await client.execute('migrate-incoming', { uri: fileUri(fdsetId, snapshot.header.streamOffset), 'exit-on-error': false });
    await opts.onMigrating?.(client);
    const outcome = await waitForMigration(client, { pollMs: opts.pollMs ?? 10, startedAt: started, signal: opts.signal });
    if (outcome.status !== 'completed') {
      throw new RestoreError(`QEMU could not load ${opts.inPath}: ${outcome['error-desc'] ?? outcome.status}`);
    }
    const durationMs = Date.now() - started;
    await removeFdSet(client, fdsetId);
    fdsetId = undefined;

    const status = await queryStatus(client);
    if (!opts.paused && !status.running) await client.execute('cont');
    if (opts.paused && status.running) await client.execute('stop');
    const bytes = snapshot.layout.blocks.reduce((sum, b) => sum + b.pagesPresent * b.pageSize, 0);
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
    for (const fd of fds) fs.closeSync(fd);
    client.close();
  }
}

/** Refuses a QEMU that is not waiting for this snapshot, before anything is loaded. */
async function checkTarget(client: QmpClient, socket: string, snapshot: VerifiedSnapshot): Promise<void> {
  const meta = snapshot.header.metadata;
  const { status } = await queryStatus(client);
  if (status !== 'inmigrate') {
    throw new RestoreError(
      `the QEMU at ${socket} is '${status}', not waiting for a restore: start it with -incoming defer, or use --launch`,
    );
  }
  const incoming = await client.execute<MigrationInfo>('query-migrate');
  if (incoming.status !== undefined && incoming.status !== 'none' && incoming.status !== 'setup') {
    throw new RestoreError(`the QEMU at ${socket} already has an incoming migration ('${incoming.status}')`);
  }
  const machine = await queryMachine(client);
  if (machine !== meta.qemu.machine) {
    throw new RestoreError(`the QEMU at ${socket} runs machine '${machine}'; the snapshot was saved from '${meta.qemu.machine}'`);
  }
  const ram = await queryRamBytes(client);
  if (ram !== meta.ram.bytes) {
    throw new RestoreError(`the QEMU at ${socket} has ${ram} bytes of RAM; the snapshot holds ${meta.ram.bytes}`);
  }
  // A QEMU started by someone else must not write onto a frozen base: that would
  // corrupt every later restore of this snapshot.
  const bases = new Map((meta.disks ?? []).map((d) => [d.base, d]));
  for (const disk of writableDisks(await client.execute<BlockInfo[]>('query-block'))) {
    const d = bases.get(disk.chain[0]!.filename);
    if (d) {
      throw new RestoreError(
        `the QEMU at ${socket} would write to ${d.base}, the snapshot's frozen disk base: start it on an overlay ` +
          `(qemu-img create -f qcow2 -b ${d.base} -F ${d.baseFormat} OVERLAY) or use --launch`,
      );
    }
  }
}
