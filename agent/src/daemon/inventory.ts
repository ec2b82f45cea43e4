// Publishes what this node's agent sees as the cluster-scoped VMInventory
// named after the node: every inventoryIntervalSeconds, and soon after an
// operation ends. Doubles as the agent's heartbeat (status.updatedTime).
import fs from 'node:fs';
import type { Logger } from 'pino';
import { API_VERSION, VMINVENTORY_KIND, type InventoryVM, type VMInventory, type VMInventoryStatus } from '../../../api/index.js';
import { statusCode, type Kube } from '../../../kube/client.js';
import { formatQemuVersion, type QmpClient } from '../qmp/client.js';
import type { DiscoveredVm, VmFinder } from './discovery.js';
import { peerPid, probeQmp, type Probe } from './qemu-control.js';
import { vmKey, type VmLocks } from './vm-locks.js';

const MAX_VMS = 1024;
const QUERY_TIMEOUT_MS = 2000;

export function buildInventoryStatus(args: {
  nodeName: string;
  agentVersion: string;
  vmRoot: string;
  storageRoot: string;
  storageFreeBytes?: number;
  vms: InventoryVM[];
  now: Date;
}): VMInventoryStatus {
  const vms = [...args.vms].sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name)).slice(0, MAX_VMS);
  return {
    nodeName: args.nodeName,
    agentVersion: args.agentVersion,
    updatedTime: args.now.toISOString(),
    vmRoot: args.vmRoot,
    storageRoot: args.storageRoot,
    ...(args.storageFreeBytes !== undefined ? { storageFreeBytes: args.storageFreeBytes } : {}),
    vmCount: vms.length,
    vms,
  };
}

export function storageFreeBytes(dir: string): number | undefined {
  try {
    const s = fs.statfsSync(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return undefined;
  }
}

/** One VM as QMP describes it; "stopped" when its owner says no QEMU runs (a hibernated VM pod); "unreachable" with the reason when it does not answer. */
export async function queryInventoryVm(vm: DiscoveredVm, connect: (vm: DiscoveredVm, timeoutMs: number) => Promise<Probe> = (v, t) => probeQmp(v.qmpSocket, t)): Promise<InventoryVM> {
  const base = { namespace: vm.namespace, name: vm.name, qmpSocket: vm.qmpSocket };
  const probe = await connect(vm, 1000);
  if (probe.kind === 'absent' && probe.stopped) return { ...base, state: 'stopped', message: probe.message.slice(0, 1024) };
  if (probe.kind !== 'answers') return { ...base, state: 'unreachable', message: probe.message.slice(0, 1024) };
  const client: QmpClient = probe.client;
  try {
    const opt = { timeoutMs: QUERY_TIMEOUT_MS };
    const [status, machineType, memory] = await Promise.all([
      client.execute<{ status: string }>('query-status', {}, opt),
      client.execute<string>('qom-get', { path: '/machine', property: 'type' }, opt),
      client.execute<{ 'base-memory': number; 'plugged-memory'?: number }>('query-memory-size-summary', {}, opt),
    ]);
    const pid = peerPid(client);
    return {
      ...base,
      state: status.status,
      memoryBytes: memory['base-memory'] + (memory['plugged-memory'] ?? 0),
      qemuVersion: formatQemuVersion(client.version).slice(0, 128),
      machine: machineType.replace(/-machine$/, ''),
      ...(pid !== undefined ? { pid } : {}),
    };
  } catch (err) {
    return { ...base, state: 'unreachable', message: (err as Error).message.slice(0, 1024) };
  } finally {
    client.close();
  }
}

export interface InventoryDeps {
  kube: Kube;
  nodeName: string;
  agentVersion: string;
  vmRoot: string;
  storageRoot: string;
  intervalSeconds: number;
  discovery: VmFinder;
  locks: VmLocks;
  log: Logger;
  /** Called after each successful publish (the agent's readiness). */
  onPublished?: () => void;
}

export class InventoryPublisher {
  private readonly last = new Map<string, InventoryVM>();
  private exists = false;
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly deps: InventoryDeps) {}

  start(): void {
    this.timer = setInterval(() => this.refreshSoon(0), this.deps.intervalSeconds * 1000);
    this.refreshSoon(0);
  }

  /** Refresh shortly (coalescing bursts), e.g. right after an operation finished. */
  refreshSoon(delayMs = 200): void {
    if (this.stopped || this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      void this.refresh();
    }, delayMs);
  }

  /** The last state seen for a VM (used while an operation holds its monitor). */
  lastState(namespace: string, name: string): InventoryVM | undefined {
    return this.last.get(vmKey(namespace, name));
  }

  async refresh(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.publishOnce()
      .catch((err: unknown) => this.deps.log.warn({ err: String(err) }, 'cannot publish the VMInventory; retrying at the next interval'))
      .finally(() => {
        this.running = undefined;
        if (this.again && !this.stopped) {
          this.again = false;
          this.refreshSoon(0);
        }
      });
    return this.running;
  }

  private async publishOnce(): Promise<void> {
    const { deps } = this;
    const discovered = await deps.discovery.scan();
    const vms = await Promise.all(discovered.map((vm) => this.queryUnlessBusy(vm)));
    const seen = new Set(discovered.map((vm) => vmKey(vm.namespace, vm.name)));
    for (const key of this.last.keys()) if (!seen.has(key)) this.last.delete(key);
    const status = buildInventoryStatus({
      nodeName: deps.nodeName,
      agentVersion: deps.agentVersion,
      vmRoot: deps.vmRoot,
      storageRoot: deps.storageRoot,
      storageFreeBytes: storageFreeBytes(deps.storageRoot),
      vms,
      now: new Date(),
    });
    if (this.stopped) return;
    await this.ensureExists();
    try {
      await deps.kube.patchStatus('vmInventory', { name: deps.nodeName }, { status });
      deps.onPublished?.();
    } catch (err) {
      if (statusCode(err) === 404) this.exists = false; // deleted by someone: recreated next time
      throw err;
    }
  }

  private async queryUnlessBusy(vm: DiscoveredVm): Promise<InventoryVM> {
    const key = vmKey(vm.namespace, vm.name);
    const release = this.deps.locks.tryAcquire(key, 'inventory');
    if (!release) {
      const previous = this.last.get(key);
      return previous ?? { namespace: vm.namespace, name: vm.name, qmpSocket: vm.qmpSocket, state: 'unknown', message: 'an operation is in progress on this VM' };
    }
    try {
      const entry = await queryInventoryVm(vm, (v, t) => this.deps.discovery.probe(v, t));
      this.last.set(key, entry);
      return entry;
    } finally {
      release();
    }
  }

  private async ensureExists(): Promise<void> {
    if (this.exists) return;
    const { kube, nodeName } = this.deps;
    if (!(await kube.get<VMInventory>('vmInventory', { name: nodeName }))) {
      try {
        await kube.create('vmInventory', { apiVersion: API_VERSION, kind: VMINVENTORY_KIND, metadata: { name: nodeName } });
        this.deps.log.info({ name: nodeName }, 'created the VMInventory');
      } catch (err) {
        if (statusCode(err) !== 409) throw err;
      }
    }
    this.exists = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    this.soon = undefined;
    await this.running;
  }
}
