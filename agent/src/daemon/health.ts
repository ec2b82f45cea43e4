// The agent's answers to the kubelet's probes (VMSNAP_HEALTH_PORT, bound to VMSNAP_HEALTH_HOST,
// the pod IP in the chart). /healthz: the process answers, so its event loop turns (a blocked
// loop times the probe out, which is the failure that matters). /readyz: the work watches have
// synced and the last VMInventory publish succeeded recently: an agent that cannot publish is
// invisible to the operator, so a DaemonSet rollout should wait for it. /metrics: metrics.ts.
import type { Logger } from 'pino';
import type { AgentMetrics } from './metrics.js';
import { portFromEnv, serveHealth, type HealthServer } from '../../../kube/health.js';

export class AgentHealth {
  private synced = false;
  private stopping = false;
  private lastPublished = 0;

  constructor(
    /** A publish older than this makes the agent unready. */
    readonly publishMaxAgeMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  watchesSynced(): void {
    this.synced = true;
  }

  inventoryPublished(): void {
    this.lastPublished = this.now();
  }

  stopped(): void {
    this.stopping = true;
  }

  live(): string | undefined {
    return undefined;
  }

  ready(): string | undefined {
    if (this.stopping) return 'stopping';
    if (!this.synced) return 'recovering work left by a previous agent and syncing the VMSnapshot and VMRestore watches';
    if (this.lastPublished === 0) return 'the VMInventory has not been published yet';
    const age = this.now() - this.lastPublished;
    if (age > this.publishMaxAgeMs) return `the VMInventory was last published ${Math.round(age / 1000)} s ago (the log says why the later ones failed)`;
    return undefined;
  }
}

/** The agent's health, served when VMSNAP_HEALTH_PORT is set. Three missed inventory intervals make it unready. */
export async function startAgentHealth(opts: {
  env: NodeJS.ProcessEnv;
  log: Logger;
  inventoryIntervalSeconds: number;
  metrics?: AgentMetrics;
}): Promise<{ health: AgentHealth; port?: number; close: () => Promise<void> }> {
  const health = new AgentHealth((3 * opts.inventoryIntervalSeconds + 10) * 1000);
  const port = portFromEnv(opts.env, 'VMSNAP_HEALTH_PORT');
  if (port === undefined) return { health, close: async () => undefined };
  const host = opts.env.VMSNAP_HEALTH_HOST || '0.0.0.0';
  const server: HealthServer = await serveHealth({ port, host, live: () => health.live(), ready: () => health.ready(),
    ...(opts.metrics ? { metrics: { contentType: opts.metrics.registry.contentType, text: () => opts.metrics!.registry.metrics() } } : {}),
  });
  opts.log.info({ port: server.port, host }, 'serving /healthz and /readyz');
  return { health, port: server.port, close: () => server.close() };
}
