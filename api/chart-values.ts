// The Helm chart's values, as a zod schema: helm/vmsnap/values.schema.json is generated from it
// (helm refuses bad values at install time) and a unit test parses values.yaml with it.
import { z } from 'zod';
import { DeletionPolicySchema, DirectIOSchema, MAX_CHANNELS, MIN_CHANNELS, dns1123Subdomain } from './common.js';

const anyMap = () => z.record(z.string(), z.unknown());
const stringMap = () => z.record(z.string(), z.string());
const envVar = () => z.looseObject({ name: z.string().min(1) });
const resources = () => z.looseObject({ requests: anyMap().optional(), limits: anyMap().optional() });

const serviceAccount = () =>
  z.strictObject({
    create: z.boolean(),
    name: dns1123Subdomain('serviceAccount.name'),
    annotations: stringMap(),
  });

const podPlacement = {
  podAnnotations: stringMap(),
  podLabels: stringMap(),
  nodeSelector: stringMap(),
  tolerations: z.array(anyMap()),
  affinity: anyMap(),
  priorityClassName: z.string(),
  resources: resources(),
  extraEnv: z.array(envVar()),
};

/** pino's levels, for the chart's logLevel and the components' VMSNAP_LOG_LEVEL. */
export const LogLevelSchema = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

const absolutePath = z.string().regex(/^\/.*/, { error: 'must be an absolute path' });
const port = () => z.number().int().min(1).max(65535);
// A Prometheus Operator ServiceMonitor or PodMonitor: off by default, labels for Prometheus to select it by.
const prometheusMonitor = () =>
  z.strictObject({
    enabled: z.boolean(),
    interval: z.string().regex(/^[0-9]+(ms|s|m|h)$/, { error: 'must be a Prometheus duration such as 30s' }),
    labels: stringMap(),
  });
// Kubernetes validates these; the chart only passes them through.
const securityContext = () => anyMap();

/**
 * The capabilities the agent container keeps with vmSource pods (values.yaml adds exactly these
 * after dropping ALL; the chart README says why each is needed, and the node suite compares them
 * with the running agent's CapEff):
 * - DAC_OVERRIDE: connect(2) needs write permission on a socket, and a VM pod's sockets belong
 *   to the pod's user;
 * - SYS_PTRACE: /proc/<pid>/{smaps,maps,fd,environ} of a process of another user need
 *   PTRACE_MODE_READ access (a lazily restored VM's resident bytes, the disks its QEMU holds).
 */
export const AGENT_CAPABILITIES = ['DAC_OVERRIDE', 'SYS_PTRACE'] as const;

/** Where the agent finds VMs (env VMSNAP_VM_SOURCE). */
export const VM_SOURCES = ['pods', 'sockets'] as const;

export const ChartValuesSchema = z.strictObject({
  global: anyMap().optional(),
  nameOverride: z.string(),
  fullnameOverride: z.string(),
  image: z.strictObject({
    repository: z.string().min(1),
    tag: z.string(),
    pullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']),
  }),
  imagePullSecrets: z.array(z.strictObject({ name: z.string().min(1) })),
  logLevel: LogLevelSchema,
  // Rendered as KUBERNETES_SERVICE_HOST/PORT; the template refuses a host without a port.
  apiServer: z.strictObject({
    host: z.string().regex(/^[A-Za-z0-9.:-]*$/, { error: 'must be a host name or an IP address' }),
    port: z.number().int().min(0).max(65535),
  }),
  rbac: z.strictObject({
    create: z.boolean(),
    aggregateToDefaultRoles: z.boolean(),
    // Subjects of a ClusterRoleBinding that lets them read VMSnapshotClasses (cluster-scoped, so
    // a namespace's edit RoleBinding cannot grant them). Empty: no binding.
    classReaders: z.array(
      z.strictObject({
        kind: z.enum(['Group', 'User', 'ServiceAccount']),
        name: z.string().min(1),
        namespace: z.string().min(1).optional(),
      }),
    ),
  }),
  grafanaDashboard: z.strictObject({
    enabled: z.boolean(),
    namespace: z.string(),
    labels: stringMap(),
    annotations: stringMap(),
  }),
  defaultClass: z.strictObject({
    create: z.boolean(),
    name: dns1123Subdomain('defaultClass.name'),
    channels: z.number().int().min(MIN_CHANNELS).max(MAX_CHANNELS),
    directIO: DirectIOSchema,
    deletionPolicy: DeletionPolicySchema,
  }),
  operator: z.strictObject({
    replicas: z.number().int().min(0),
    serviceAccount: serviceAccount(),
    command: z.array(z.string()).min(1),
    args: z.array(z.string()),
    leaderElection: z.strictObject({
      enabled: z.boolean(),
      leaseName: dns1123Subdomain('operator.leaderElection.leaseName'),
      leaseDurationSeconds: z.number().int().min(1),
      renewDeadlineSeconds: z.number().int().min(1),
      retryPeriodSeconds: z.number().int().min(1),
    }),
    metricsPort: z.number().int().min(0).max(65535),
    nodeLossGraceSeconds: z.number().int().min(1),
    metricsService: z.strictObject({ enabled: z.boolean(), annotations: stringMap() }),
    serviceMonitor: prometheusMonitor(),
    podDisruptionBudget: z.strictObject({
      enabled: z.boolean(),
      maxUnavailable: z.union([z.number().int().min(0), z.string().regex(/^[0-9]+%$/, { error: 'must be a count or a percentage such as 50%' })]),
    }),
    probes: z.strictObject({ enabled: z.boolean(), port: port() }),
    hostNetwork: z.boolean(),
    podSecurityContext: securityContext(),
    securityContext: securityContext(),
    ...podPlacement,
  }),
  agent: z.strictObject({
    serviceAccount: serviceAccount(),
    command: z.array(z.string()).min(1),
    args: z.array(z.string()),
    vmSource: z.enum(VM_SOURCES),
    kubeletRootDir: absolutePath,
    vmRoot: absolutePath,
    storageRoot: absolutePath,
    socketGlobs: z.array(z.string().min(1)).min(1),
    inventoryIntervalSeconds: z.number().int().min(5).max(3600),
    maxConcurrentOperations: z.number().int().min(1).max(64),
    // 0: the agent's default (maxConcurrentOperations - 1, at least 1).
    maxOperationsPerNamespace: z.number().int().min(0).max(64),
    stallTimeoutSeconds: z.number().int().min(5).max(3600),
    repositorySecrets: z.array(dns1123Subdomain('agent.repositorySecrets[]')),
    kvm: z.strictObject({ enabled: z.boolean() }),
    probes: z.strictObject({ enabled: z.boolean(), port: port() }),
    // Scrapes /metrics on the probes' port, so it needs probes.enabled.
    podMonitor: prometheusMonitor(),
    hostNetwork: z.boolean(),
    singleTenantHostsAcknowledged: z.boolean(),
    privileged: z.boolean(),
    podSecurityContext: securityContext(),
    securityContext: securityContext(),
    extraHostPaths: z.array(
      z.strictObject({
        name: z.string().min(1),
        path: absolutePath,
        mountPath: absolutePath.optional(),
        type: z.string().optional(),
        readOnly: z.boolean().optional(),
      }),
    ),
    terminationGracePeriodSeconds: z.number().int().min(0),
    updateStrategy: anyMap(),
    ...podPlacement,
  }),
});
export type ChartValues = z.infer<typeof ChartValuesSchema>;

/** values.schema.json content: draft-07, which every Helm 3 release understands. */
export function chartValuesJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(ChartValuesSchema, { target: 'draft-7', io: 'input', unrepresentable: 'throw' }) as Record<string, unknown>;
}
