// The operator's settings, from the environment the chart renders (VMSNAP_*). The unprefixed
// names (METRICS_PORT, METRICS_HOST, LEADER_ELECTION, LOG_LEVEL) are read when the VMSNAP_ one is
// unset: the process-level test stack starts the operator with them.
import os from 'node:os';
import { DEFAULT_RELEASE_NAMESPACE, LEADER_ELECTION_LEASE } from '../api/index.js';
import { DEFAULT_NODE_LOSS_GRACE_SECONDS } from './node-loss.js';
import { portFromEnv } from '../kube/health.js';

export interface OperatorSettings {
  logLevel: string;
  /** undefined: no metrics server. 0: any free port. */
  metricsPort: number | undefined;
  metricsHost: string;
  /** undefined: /healthz and /readyz only on the metrics server. */
  healthPort: number | undefined;
  healthHost: string;
  /** The operator's namespace: where repository Secrets are read. */
  namespace: string;
  /** A snapshot's node silent this long no longer blocks its deletion (VMSNAP_NODE_LOSS_GRACE_SECONDS). */
  nodeLossGraceSeconds: number;
  leaderElection:
    | undefined
    | { namespace: string; name: string; identity: string; leaseDurationSeconds: number; renewDeadlineSeconds: number; retryPeriodSeconds: number };
}

export function operatorSettings(env: NodeJS.ProcessEnv = process.env): OperatorSettings {
  const pick = (name: string, legacy?: string) => env[`VMSNAP_${name}`] ?? (legacy ? env[legacy] : undefined);
  const seconds = (name: string, fallback: number) => {
    const raw = pick(name);
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new Error(`VMSNAP_${name}=${raw} must be a whole number of seconds, at least 1`);
    return n;
  };
  const metricsRaw = pick('METRICS_PORT', 'METRICS_PORT');
  const metricsPort = metricsRaw === 'off' ? undefined : (portFromEnv({ VMSNAP_METRICS_PORT: metricsRaw }, 'VMSNAP_METRICS_PORT') ?? 8080);
  return {
    logLevel: pick('LOG_LEVEL', 'LOG_LEVEL') ?? 'info',
    metricsPort,
    metricsHost: pick('METRICS_HOST', 'METRICS_HOST') || '0.0.0.0',
    healthPort: portFromEnv(env, 'VMSNAP_HEALTH_PORT'),
    healthHost: env.VMSNAP_HEALTH_HOST || '0.0.0.0',
    namespace: env.POD_NAMESPACE || DEFAULT_RELEASE_NAMESPACE,
    nodeLossGraceSeconds: seconds('NODE_LOSS_GRACE_SECONDS', DEFAULT_NODE_LOSS_GRACE_SECONDS),
    leaderElection:
      pick('LEADER_ELECTION', 'LEADER_ELECTION') === 'false'
        ? undefined
        : {
            namespace: env.VMSNAP_LEASE_NAMESPACE || env.POD_NAMESPACE || 'vmsnap-system',
            name: env.VMSNAP_LEASE_NAME || LEADER_ELECTION_LEASE,
            identity: env.POD_NAME || `${os.hostname()}-${process.pid}`,
            leaseDurationSeconds: seconds('LEASE_DURATION_SECONDS', 15),
            renewDeadlineSeconds: seconds('LEASE_RENEW_DEADLINE_SECONDS', 10),
            retryPeriodSeconds: seconds('LEASE_RETRY_PERIOD_SECONDS', 2),
          },
  };
}
