// `vmsnap-agent daemon`: the node agent. Publishes this node's VMs as its
// VMInventory and does the VMSnapshots and VMRestores assigned to this node.
// Env: NODE_NAME (required), KUBECONFIG (else in-cluster), VMSNAP_AGENT_CONFIG
// or --config, VMSNAP_VM_SOURCE / VMSNAP_KUBELET_ROOT_DIR / VMSNAP_VM_ROOT /
// VMSNAP_STORAGE_ROOT / VMSNAP_INVENTORY_INTERVAL_SECONDS overrides, VMSNAP_LOG_LEVEL (or LOG_LEVEL),
// VMSNAP_HEALTH_PORT / VMSNAP_HEALTH_HOST (the probes' and /metrics listener, health.ts; none when unset).
import fs from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';
import { AGENT_COMPONENT } from '../../../api/index.js';
import { Kube } from '../../../kube/client.js';
import { EventRecorder } from '../../../kube/events.js';
import { loadDaemonSettings } from './config.js';
import { startAgentHealth } from './health.js';
import { AgentMetrics } from './metrics.js';
import type { AgentContext } from './context.js';
import { Discovery, type VmFinder } from './discovery.js';
import { PodVms } from '../vm/pod-vms.js';
import { InventoryPublisher } from './inventory.js';
import { LazyResidencyReporter } from './lazy-residency.js';
import { agentVersion } from './version.js';
import { VmLocks } from './vm-locks.js';
import { WorkDispatcher } from './work.js';
import { SnapshotUploads } from '../objstore/uploads.js';
import { reclaimFetchedCopies } from '../objstore/fetch.js';
import { DEFAULT_RELEASE_NAMESPACE } from '../../../api/index.js';

export function kubeConfigFromEnv(env: NodeJS.ProcessEnv = process.env): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (env.KUBECONFIG) kc.loadFromFile(env.KUBECONFIG);
  else kc.loadFromCluster();
  return kc;
}

export interface RunningDaemon {
  /** Resolves once the daemon has stopped (after SIGTERM/SIGINT or stop()). */
  stopped: Promise<void>;
  stop(reason?: string): Promise<void>;
  dispatcher: WorkDispatcher;
  inventory: InventoryPublisher;
  log: Logger;
}

export async function startDaemon(
  opts: { configPath?: string; env?: NodeJS.ProcessEnv; log?: Logger; signal?: AbortSignal } = {},
): Promise<RunningDaemon> {
  const env = opts.env ?? process.env;
  const { nodeName, config, configPath } = loadDaemonSettings({ configPath: opts.configPath, env });
  const log = opts.log ?? pino({ level: env.VMSNAP_LOG_LEVEL ?? env.LOG_LEVEL ?? 'info', base: { component: AGENT_COMPONENT, node: nodeName } });
  const version = agentVersion();
  log.info({ version, configPath, ...config }, 'starting');
  const metrics = new AgentMetrics();
  const health = await startAgentHealth({ env, log, inventoryIntervalSeconds: config.inventoryIntervalSeconds, metrics });

  fs.mkdirSync(config.storageRoot, { recursive: true, mode: 0o700 });
  const kube = new Kube(kubeConfigFromEnv(env));
  const events = new EventRecorder(kube, `${AGENT_COMPONENT}/${nodeName}`, (msg, err) => log.warn({ err: String(err) }, msg));
  const discovery: VmFinder =
    config.vmSource === 'pods'
      ? new PodVms(kube, nodeName, config.kubeletRootDir, (pod, reason) => log.warn({ pod }, `ignoring pod ${pod}: ${reason}`))
      : new Discovery(config.vmRoot, config.socketGlobs, (path, reason) => log.warn({ path }, `ignoring ${path}: ${reason}`));
  const locks = new VmLocks();
  const ctx: AgentContext = { kube, events, log, nodeName, config, discovery, locks, filesInUse: new Map(), metrics, namespace: env.POD_NAMESPACE || DEFAULT_RELEASE_NAMESPACE };
  const inventory = new InventoryPublisher({
    kube,
    nodeName,
    agentVersion: version,
    vmRoot: config.vmRoot,
    storageRoot: config.storageRoot,
    intervalSeconds: config.inventoryIntervalSeconds,
    discovery,
    locks,
    log,
    onPublished: () => health.health.inventoryPublished(),
  });
  // Lazily restored VMs: status.lazy.residentBytes, at the inventory's pace.
  const residency = new LazyResidencyReporter(ctx, config.inventoryIntervalSeconds * 1000);
  let reclaim: ReturnType<typeof setInterval> | undefined;
  const uploads = new SnapshotUploads(ctx, ctx.namespace!);
  const dispatcher = new WorkDispatcher(
    ctx,
    () => {
      inventory.refreshSoon(0); // at once: the operator waits for it before the VM's next operation
      residency.wake();
    },
    (snap) => uploads.consider(snap),
  );

  const starting = new AbortController();
  opts.signal?.addEventListener('abort', () => starting.abort(), { once: true });
  if (opts.signal?.aborted) starting.abort();
  let stopping: Promise<void> | undefined;
  let markStopped!: () => void;
  const stopped = new Promise<void>((r) => (markStopped = r));
  const stop = (reason = 'stop requested'): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason }, 'stopping: cancelling running saves; restored VMs keep running');
      health.health.stopped();
      starting.abort();
      if (reclaim) clearInterval(reclaim);
      await dispatcher.stop();
      await uploads.stop();
      await residency.stop();
      await inventory.stop();
      await health.close();
      log.info('stopped');
      markStopped();
    })();
    return stopping;
  };

  await dispatcher.start(starting.signal);
  // Copies fetched from repositories for restores here: removed once their VMSnapshot is gone.
  reclaim = setInterval(() => {
    reclaimFetchedCopies(kube, config.storageRoot, ctx.filesInUse)
      .then((removed) => removed.length && log.info({ removed }, 'reclaimed fetched snapshot copies'))
      .catch((err: unknown) => log.warn({ err: String(err) }, 'cannot reclaim fetched snapshot copies'));
  }, config.inventoryIntervalSeconds * 1000);
  reclaim.unref();
  if (!starting.signal.aborted) {
    health.health.watchesSynced();
    inventory.start();
    residency.start();
    log.info('running');
  }
  return { stopped, stop, dispatcher, inventory, log };
}

/** The CLI entry: runs until SIGTERM or SIGINT, then stops cleanly. */
export async function runDaemon(opts: { configPath?: string } = {}): Promise<void> {
  let daemon: RunningDaemon | undefined;
  let signalled: string | undefined;
  const early = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    signalled ??= signal;
    early.abort();
    void daemon?.stop(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  daemon = await startDaemon({ configPath: opts.configPath, signal: early.signal });
  if (signalled) void daemon.stop(signalled);
  await daemon.stopped;
}
