// The operator's settings, from the environment the chart renders (VMSNAP_*, POD_NAME,
// POD_NAMESPACE), parsed by one zod schema: a bad value stops the operator with the variable's
// name, its value and what is allowed. An empty variable counts as unset.
import os from 'node:os';
import { z } from 'zod';
import { DEFAULT_RELEASE_NAMESPACE, LEADER_ELECTION_LEASE } from '../api/index.js';
import { DEFAULT_NODE_LOSS_GRACE_SECONDS } from './node-loss.js';
import { LogLevelSchema } from '../api/chart-values.js';

const PORT = 'must be a port (0-65535)';
const port = z.coerce.number({ error: PORT }).int({ error: PORT }).min(0, { error: PORT }).max(65535, { error: PORT });
const SECONDS = 'must be a whole number of seconds, at least 1';
const seconds = (fallback: number) =>
  z.coerce.number({ error: SECONDS }).int({ error: SECONDS }).min(1, { error: SECONDS }).default(fallback);

export const OperatorEnvSchema = z.object({
  VMSNAP_LOG_LEVEL: LogLevelSchema.default('info'),
  /** off: no metrics server; 0: any free port. */
  VMSNAP_METRICS_PORT: z.union([z.literal('off'), port], { error: `must be off or a port (0-65535)` }).default(8080),
  VMSNAP_METRICS_HOST: z.string().default('0.0.0.0'),
  /** Unset: /healthz and /readyz only on the metrics server. */
  VMSNAP_HEALTH_PORT: port.optional(),
  VMSNAP_HEALTH_HOST: z.string().default('0.0.0.0'),
  VMSNAP_LEADER_ELECTION: z.enum(['true', 'false']).default('true'),
  VMSNAP_LEASE_NAME: z.string().default(LEADER_ELECTION_LEASE),
  VMSNAP_LEASE_NAMESPACE: z.string().optional(),
  VMSNAP_LEASE_DURATION_SECONDS: seconds(15),
  VMSNAP_LEASE_RENEW_DEADLINE_SECONDS: seconds(10),
  VMSNAP_LEASE_RETRY_PERIOD_SECONDS: seconds(2),
  /** How long a node's agent may be silent before its snapshots' deletion stops waiting for it. */
  VMSNAP_NODE_LOSS_GRACE_SECONDS: seconds(DEFAULT_NODE_LOSS_GRACE_SECONDS),
  POD_NAME: z.string().optional(),
  POD_NAMESPACE: z.string().optional(),
});

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
  const names = Object.keys(OperatorEnvSchema.shape);
  const set = Object.fromEntries(names.flatMap((n) => (env[n]?.trim() ? [[n, env[n]!.trim()]] : [])));
  const parsed = OperatorEnvSchema.safeParse(set);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      const name = String(i.path[0]);
      return `${name}=${set[name]} ${i.message}`;
    });
    throw new Error(`invalid operator environment: ${problems.join('; ')}`);
  }
  const e = parsed.data;
  return {
    logLevel: e.VMSNAP_LOG_LEVEL,
    metricsPort: e.VMSNAP_METRICS_PORT === 'off' ? undefined : e.VMSNAP_METRICS_PORT,
    metricsHost: e.VMSNAP_METRICS_HOST,
    healthPort: e.VMSNAP_HEALTH_PORT,
    healthHost: e.VMSNAP_HEALTH_HOST,
    namespace: e.POD_NAMESPACE ?? DEFAULT_RELEASE_NAMESPACE,
    nodeLossGraceSeconds: e.VMSNAP_NODE_LOSS_GRACE_SECONDS,
    leaderElection:
      e.VMSNAP_LEADER_ELECTION === 'false'
        ? undefined
        : {
            namespace: e.VMSNAP_LEASE_NAMESPACE ?? e.POD_NAMESPACE ?? 'vmsnap-system',
            name: e.VMSNAP_LEASE_NAME,
            identity: e.POD_NAME ?? `${os.hostname()}-${process.pid}`,
            leaseDurationSeconds: e.VMSNAP_LEASE_DURATION_SECONDS,
            renewDeadlineSeconds: e.VMSNAP_LEASE_RENEW_DEADLINE_SECONDS,
            retryPeriodSeconds: e.VMSNAP_LEASE_RETRY_PERIOD_SECONDS,
          },
  };
}
