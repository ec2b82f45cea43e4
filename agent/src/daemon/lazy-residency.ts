// Keeps status.lazy of this node's lazily restored VMs current: every interval
// it finds each one's QEMU (the process whose environment carries the restore's
// uid), reads how much of its mapped RAM is resident, and patches the status
// when that changed. Once the VM has exited it says so, once, and stops.
import fs from 'node:fs';
import { NODE_LABEL, Phase, RestoreMode, type LazyRestoreStatus, type VMRestore } from '../../../api/index.js';
import { lazyResidency, type LazyResidency } from '../engine/index.js';
import type { AgentContext } from './context.js';
import { processEnvVar } from './qemu-control.js';
import { RESTORE_UID_ENV } from './restore-runner.js';
import { isPodVms, type PodVms } from '../vm/pod-vms.js';

/**
 * The host pid of a VM pod's QEMU (the peer of its checked QMP socket) when it maps `file`: a
 * lazily restored VM pod still running on that mapping. Undefined when it is gone or was replaced.
 */
export async function podQemuMapping(finder: PodVms, r: VMRestore, file: string): Promise<number | undefined> {
  const name = r.status?.effective?.targetVMName ?? r.spec.targetVMName ?? r.status?.effective?.sourceVMName;
  if (!name) return undefined;
  try {
    const vm = await finder.find(r.metadata.namespace!, name);
    if (!vm) return undefined;
    const client = await finder.connectQmp(vm, 2_000);
    try {
      const pid = client.peerCredentials().pid;
      return lazyResidency(pid, file) ? pid : undefined;
    } finally {
      client.close();
    }
  } catch {
    return undefined;
  }
}

/** Pure: status.lazy from a measurement (undefined residency: the VM is gone). */
export function lazyStatus(file: string, mappedBytes: number, residency: LazyResidency | undefined, now: Date): LazyRestoreStatus {
  if (!residency) return { file, mappedBytes, vmRunning: false, measuredAt: now.toISOString() };
  return {
    file,
    mappedBytes,
    residentBytes: residency.residentBytes,
    residentPercent: mappedBytes > 0 ? Math.min(100, Math.round((1000 * residency.residentBytes) / mappedBytes) / 10) : 0,
    privateBytes: residency.privateBytes,
    sharedBytes: residency.sharedBytes,
    vmRunning: true,
    measuredAt: now.toISOString(),
  };
}

/** status.lazy of a VM known to run (just restored): an unreadable measurement counts as nothing resident yet. */
export function runningLazyStatus(file: string, mappedBytes: number, residency: LazyResidency | undefined, now: Date): LazyRestoreStatus {
  return lazyStatus(file, mappedBytes, residency ?? { mappedBytes, residentBytes: 0, privateBytes: 0, sharedBytes: 0 }, now);
}

/** Pure: whether a new measurement is worth a status write (1% of the RAM, or the VM exited). */
export function residencyChanged(before: LazyRestoreStatus | undefined, after: LazyRestoreStatus): boolean {
  if (!before) return true;
  if (before.vmRunning !== after.vmRunning) return true;
  const step = after.mappedBytes / 100;
  return (
    Math.abs((after.residentBytes ?? 0) - (before.residentBytes ?? 0)) >= step ||
    Math.abs((after.privateBytes ?? 0) - (before.privateBytes ?? 0)) >= step ||
    Math.abs((after.sharedBytes ?? 0) - (before.sharedBytes ?? 0)) >= step
  );
}

/** The pid of the QEMU launched for this restore, from /proc (it outlives agent restarts). */
export function qemuOfRestore(uid: string): number | undefined {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (processEnvVar(pid, RESTORE_UID_ENV) === uid) return pid;
  }
  return undefined;
}

export class LazyResidencyReporter {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** restore uid -> QEMU pid, so /proc is scanned once per VM. */
  private readonly pids = new Map<string, number>();
  /** List the restores on the next tick: at start, after work finished, while lazy VMs run. */
  private stale = true;

  constructor(
    private readonly ctx: AgentContext,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.tick()
        .catch((err) => this.ctx.log.warn({ err: String(err) }, 'cannot update the residency of lazily restored VMs'))
        .finally(() => (this.running = undefined));
    }, this.intervalMs);
    this.timer.unref();
  }

  /** A restore finished: it may be a lazy one to follow. */
  wake(): void {
    this.stale = true;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  async tick(now = () => new Date()): Promise<void> {
    if (!this.stale) return;
    const restores = await this.ctx.kube.list<VMRestore>('vmRestore', { labelSelector: `${NODE_LABEL}=${this.ctx.nodeName}` });
    let following = 0;
    this.ctx.metrics?.lazyResident.reset();
    for (const r of restores) {
      const lazy = r.status?.lazy;
      const uid = r.metadata.uid;
      if (!uid || r.status?.phase !== Phase.Succeeded || r.status.restoreMode !== RestoreMode.Lazy || !lazy || lazy.vmRunning === false) continue;
      let pid = this.pids.get(uid);
      // A VM pod's QEMU carries no restore uid (the launcher started it): the one that still maps the file.
      const pod = isPodVms(this.ctx.discovery) ? this.ctx.discovery : undefined;
      const known = pid !== undefined && (pod ? lazyResidency(pid, lazy.file) !== undefined : processEnvVar(pid, RESTORE_UID_ENV) === uid);
      if (!known) pid = pod ? await podQemuMapping(pod, r, lazy.file) : qemuOfRestore(uid);
      if (pid === undefined) this.pids.delete(uid);
      else this.pids.set(uid, pid);
      const next = lazyStatus(lazy.file, lazy.mappedBytes, pid === undefined ? undefined : lazyResidency(pid, lazy.file), now());
      if (next.vmRunning) {
        following++;
        this.ctx.metrics?.lazyResident.set({ namespace: r.metadata.namespace!, restore: r.metadata.name! }, next.residentBytes ?? 0);
      }
      if (!residencyChanged(lazy, next)) continue;
      await this.ctx.kube
        .patchStatus('vmRestore', { namespace: r.metadata.namespace!, name: r.metadata.name! }, { status: { lazy: next } })
        .catch((err) => this.ctx.log.warn({ err: String(err), restore: r.metadata.name }, 'cannot write status.lazy'));
    }
    // With no lazy VM running here, nothing is listed again until a restore finishes.
    this.stale = following > 0;
  }
}
