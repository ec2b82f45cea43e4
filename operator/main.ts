// The vmsnap operator: leader-elected, reconciles VMSnapshots and VMRestores, serves Prometheus
// metrics and the kubelet's probes. Env: KUBECONFIG (else in-cluster), POD_NAME, POD_NAMESPACE
// and the VMSNAP_* settings of operator/settings.ts (helm/vmsnap/README.md lists them).
import { pino } from 'pino';
import { Kube } from '../kube/client.js';
import { serveHealth } from '../kube/health.js';
import { Controller } from './controller.js';
import { crdProblem } from './crd-check.js';
import { installedCrds } from './installed-crds.js';
import { LeaderElector } from './leader-election.js';
import { OperatorMetrics } from './metrics.js';
import { operatorReadiness } from './readiness.js';
import { operatorSettings } from './settings.js';

const settings = operatorSettings();
const log = pino({ level: settings.logLevel, base: { component: 'vmsnap-operator' } });

async function main(): Promise<void> {
  const kube = new Kube();
  const metrics = new OperatorMetrics();
  const controller = new Controller(kube, log, metrics, { namespace: settings.namespace, nodeLossGraceMs: settings.nodeLossGraceSeconds * 1000 });
  const le = settings.leaderElection;
  const elector = le
    ? new LeaderElector(kube, {
        namespace: le.namespace,
        name: le.name,
        identity: le.identity,
        leaseDurationSeconds: le.leaseDurationSeconds,
        renewDeadlineSeconds: le.renewDeadlineSeconds,
        renewEveryMs: le.retryPeriodSeconds * 1000,
        log: (msg) => log.info(msg),
      })
    : undefined;
  const ready = operatorReadiness({ controller, elector, now: Date.now, apiAnswerMaxAgeMs: (le?.leaseDurationSeconds ?? 15) * 2000 });
  const live = () => undefined;

  const servers: Array<{ close: () => Promise<void> }> = [];
  if (settings.metricsPort !== undefined) {
    const server = await metrics.serve(settings.metricsPort, settings.metricsHost, ready);
    log.info({ port: server.port }, 'serving /metrics, /healthz and /readyz');
    servers.push(server);
  }
  if (settings.healthPort !== undefined) {
    const server = await serveHealth({ port: settings.healthPort, host: settings.healthHost, live, ready });
    log.info({ port: server.port, host: settings.healthHost }, 'serving /healthz and /readyz');
    servers.push(server);
  }

  // After the probes serve (an unreachable API server shows as not ready), before any work.
  for (;;) {
    const installed = await installedCrds(kube).catch((err: unknown) => {
      log.warn({ err: String(err) }, 'cannot read the vmsnap CRDs yet; retrying');
      return undefined;
    });
    if (!installed) {
      await new Promise((r) => setTimeout(r, 2_000));
      continue;
    }
    const problem = crdProblem(installed);
    if (problem) throw new Error(`refusing to start: ${problem}`);
    break;
  }

  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ signal }, 'shutting down');
    await controller.stop().catch(() => undefined);
    await elector?.release();
    await Promise.all(servers.map((s) => s.close()));
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));

  if (elector) {
    log.info('waiting to become leader');
    await elector.acquire(() => {
      log.error('lost the leader lease: exiting so that only one operator acts');
      process.exit(1);
    });
  }
  await controller.start();
  log.info('operator running');
}

main().catch((err) => {
  log.fatal({ err: String(err) }, 'operator failed');
  process.exit(1);
});
