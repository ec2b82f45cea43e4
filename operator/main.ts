// The vmsnap operator: leader-elected, reconciles VMSnapshots and VMRestores,
// serves Prometheus metrics. Env: KUBECONFIG (else in-cluster), POD_NAMESPACE
// (the Lease's namespace), POD_NAME (identity), METRICS_PORT (8080; 0 = any),
// METRICS_HOST, LEADER_ELECTION ("false" to disable), LOG_LEVEL.
import os from 'node:os';
import { pino } from 'pino';
import { LEADER_ELECTION_LEASE } from '../api/index.js';
import { Kube } from '../kube/client.js';
import { Controller } from './controller.js';
import { LeaderElector } from './leader-election.js';
import { OperatorMetrics } from './metrics.js';

const log = pino({ level: process.env.LOG_LEVEL ?? 'info', base: { component: 'vmsnap-operator' } });

async function main(): Promise<void> {
  const kube = new Kube();
  const metrics = new OperatorMetrics();
  const server = await metrics.serve(Number(process.env.METRICS_PORT ?? 8080), process.env.METRICS_HOST ?? '0.0.0.0');
  log.info({ port: server.port }, 'serving /metrics and /healthz');

  const controller = new Controller(kube, log, metrics);
  const elector =
    process.env.LEADER_ELECTION === 'false'
      ? undefined
      : new LeaderElector(kube, {
          namespace: process.env.POD_NAMESPACE ?? 'vmsnap-system',
          name: LEADER_ELECTION_LEASE,
          identity: process.env.POD_NAME ?? `${os.hostname()}-${process.pid}`,
          log: (msg) => log.info(msg),
        });

  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ signal }, 'shutting down');
    await controller.stop().catch(() => undefined);
    await elector?.release();
    await server.close();
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
