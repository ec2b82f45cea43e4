// The Helm chart, for real: helm lint and template, then `helm install` into the local control
// plane (no kubelet: pods never start, the objects exist), then the installed ServiceAccounts,
// authenticated with TokenRequest tokens, make the requests the operator and agent need (allowed)
// and requests they must never make (refused). Every check is a real API request.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { AgentConfigSchema } from '../../api/agent-config.js';
import { AGENT_CAPABILITIES } from '../../api/chart-values.js';
import { API_VERSION } from '../../api/common.js';
import { CLUSTER_STARTUP_TIMEOUT_MS, createNamespace, helm, kubectl, kubectlOk, repoRoot } from '../../stack/controlplane.js';
import { apiRequest } from './api-request.js';
import { API_PREFIX, crdDocs, ensureCrds, parseYamlDocs } from './crds.js';
import { poll } from '../../kit/poll.js';
import { vmRestore, vmSnapshot } from '../../kit/manifests.js';

type Obj = Record<string, any>;

// A watch as informers open it today: the server answers at once with the current state and a
// bookmark (a plain ?watch=1 on an empty collection sends its headers only after seconds).
const WATCH = 'watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true';

const chartDir = path.join(repoRoot, 'helm', 'vmsnap');
const RUN_ID = randomBytes(3).toString('hex');
// The release name contains the chart name, so the chart's fullname is just the release name.
const release = `vmsnap-${RUN_ID}`;
const node = `vmsnap-test-node-${RUN_ID}`;

async function helmOk(args: readonly string[]): Promise<string> {
  const r = await helm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed (exit ${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

const docsOf = parseYamlDocs;

describe('helm lint and template', () => {
  beforeAll(async () => {
    await ensureCrds();
  }, CLUSTER_STARTUP_TIMEOUT_MS);

  it.each([[[] as string[]], [['--set', 'defaultClass.create=true', '--set', 'operator.probes.enabled=true']]])(
    'helm lint --strict %j passes',
    async (extra) => {
      const out = await helmOk(['lint', '--strict', chartDir, ...extra]);
      expect(out).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    },
  );

  it('renders every component, and --include-crds renders exactly crds/', async () => {
    const rendered = docsOf(await helmOk(['template', 'vmsnap', chartDir, '--namespace', 'vmsnap-system', '--include-crds']));
    const kinds = rendered.map((d) => `${d.kind}/${d.metadata.name}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'ServiceAccount/vmsnap-operator',
        'ServiceAccount/vmsnap-agent',
        'ConfigMap/vmsnap-agent-config',
        'Deployment/vmsnap-operator',
        'DaemonSet/vmsnap-agent',
        'ClusterRole/vmsnap-operator',
        'ClusterRoleBinding/vmsnap-operator',
        'ClusterRole/vmsnap-agent',
        'ClusterRoleBinding/vmsnap-agent',
        'Role/vmsnap-operator-leader-election',
        'RoleBinding/vmsnap-operator-leader-election',
        'ClusterRole/vmsnap-edit',
        'ClusterRole/vmsnap-view',
        'ClusterRole/vmsnap-class-reader',
        'Service/vmsnap-operator-metrics',
        'PodDisruptionBudget/vmsnap-operator',
        'ConfigMap/vmsnap-dashboard',
        'ClusterRoleBinding/vmsnap-class-reader',
        'ValidatingAdmissionPolicy/vmsnap-agent-node-restriction',
        'ValidatingAdmissionPolicyBinding/vmsnap-agent-node-restriction',
        'ValidatingAdmissionPolicy/vmsnap-agent-work-restriction',
        'ValidatingAdmissionPolicyBinding/vmsnap-agent-work-restriction',
        'ValidatingAdmissionPolicy/vmsnap-restore-pod-permission',
        'ValidatingAdmissionPolicyBinding/vmsnap-restore-pod-permission',
        'ValidatingAdmissionPolicy/vmsnap-operator-schedule-restriction',
        'ValidatingAdmissionPolicyBinding/vmsnap-operator-schedule-restriction',
        'ValidatingAdmissionPolicy/vmsnap-object-rules',
        'ValidatingAdmissionPolicyBinding/vmsnap-object-rules',
      ]),
    );
    const crds = rendered.filter((d) => d.kind === 'CustomResourceDefinition');
    const byName = (a: Obj, b: Obj) => String(a.metadata.name).localeCompare(String(b.metadata.name));
    expect(crds.sort(byName)).toEqual(crdDocs().sort(byName));
    expect(crdDocs(path.join(chartDir, 'crds')).sort(byName)).toEqual(crdDocs().sort(byName));

    const withoutCrds = docsOf(await helmOk(['template', 'vmsnap', chartDir, '--namespace', 'vmsnap-system']));
    expect(withoutCrds.some((d) => d.kind === 'CustomResourceDefinition')).toBe(false);
    // Nothing namespaced lands outside the release namespace.
    for (const d of withoutCrds) {
      if (d.metadata.namespace !== undefined) expect(`${d.kind}/${d.metadata.name} in ${d.metadata.namespace}`).toMatch(/ in vmsnap-system$/);
    }
  });

  const renderOne = async (kind: string, template: string, sets: string[] = []) => {
    const docs = docsOf(await helmOk(['template', 'vmsnap', chartDir, '--namespace', 'vmsnap-system', '--show-only', template, ...sets.flatMap((v) => ['--set', v])]));
    return docs.find((d) => d.kind === kind)!;
  };
  const envOf = (c: Obj) => Object.fromEntries((c.env as Obj[]).map((e) => [e.name, e.value ?? e.valueFrom?.fieldRef?.fieldPath]));

  it('renders an agent that finds VM pods through the kubelet directory, with real probes', async () => {
    const ds = await renderOne('DaemonSet', 'templates/agent-daemonset.yaml');
    const pod = ds.spec.template.spec;
    const agent = pod.containers[0];
    expect(pod.hostPID).toBe(true);
    expect(pod.hostNetwork).toBeUndefined();
    expect(agent.securityContext).toEqual({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: [...AGENT_CAPABILITIES] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(agent.volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
    expect(envOf(agent)).toMatchObject({
      NODE_NAME: 'spec.nodeName',
      VMSNAP_VM_SOURCE: 'pods',
      VMSNAP_KUBELET_ROOT_DIR: '/var/lib/kubelet',
      VMSNAP_HEALTH_PORT: '8082',
      VMSNAP_HEALTH_HOST: 'status.podIP',
    });
    expect(envOf(agent).KUBERNETES_SERVICE_HOST).toBeUndefined();
    expect(agent.volumeMounts).toContainEqual({ name: 'kubelet-root', mountPath: '/var/lib/kubelet', readOnly: true, mountPropagation: 'HostToContainer' });
    expect(pod.volumes).toContainEqual({ name: 'kubelet-root', hostPath: { path: '/var/lib/kubelet', type: 'Directory' } });
    // vmRoot and /dev/kvm belong to vmSource sockets: a pods agent does not get them.
    expect(pod.volumes.map((v: Obj) => v.name)).toEqual(['config', 'tmp', 'kubelet-root', 'storage-root']);
    // One listener for the probes and /metrics, named for the PodMonitor.
    expect(agent.ports).toEqual([{ name: 'metrics', containerPort: 8082, protocol: 'TCP' }]);
    expect(agent.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(agent.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
  });

  it('renders the local stack settings: host network and the API server by address, for both pods', async () => {
    const sets = ['apiServer.host=127.0.0.1', 'apiServer.port=6443', 'agent.hostNetwork=true', 'operator.hostNetwork=true', 'agent.probes.port=19482', 'operator.probes.port=19481'];
    const ds = await renderOne('DaemonSet', 'templates/agent-daemonset.yaml', sets);
    const deploy = await renderOne('Deployment', 'templates/operator-deployment.yaml', sets);
    for (const pod of [ds.spec.template.spec, deploy.spec.template.spec]) {
      expect(pod.hostNetwork).toBe(true);
      expect(envOf(pod.containers[0])).toMatchObject({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '6443', VMSNAP_HEALTH_HOST: 'status.podIP' });
    }
    expect(envOf(ds.spec.template.spec.containers[0]).VMSNAP_HEALTH_PORT).toBe('19482');
    const operator = deploy.spec.template.spec.containers[0];
    expect(envOf(operator)).toMatchObject({ VMSNAP_HEALTH_PORT: '19481', VMSNAP_METRICS_HOST: 'status.podIP', VMSNAP_METRICS_PORT: '8080' });
    expect(operator.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'health' });

    const r = await helm(['template', 'vmsnap', chartDir, '--set', 'apiServer.host=127.0.0.1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('apiServer.port must be set together with apiServer.host');
  });

  it('renders vmSource sockets, once single-tenant hosts are acknowledged, privileged with vmRoot (and /dev/kvm when asked) instead of the kubelet directory', async () => {
    const ds = await renderOne('DaemonSet', 'templates/agent-daemonset.yaml', ['agent.vmSource=sockets', 'agent.singleTenantHostsAcknowledged=true', 'agent.kvm.enabled=true']);
    const pod = ds.spec.template.spec;
    expect(pod.volumes.map((v: Obj) => v.name)).toEqual(['config', 'tmp', 'vm-root', 'storage-root', 'dev-kvm']);
    expect(envOf(pod.containers[0]).VMSNAP_VM_SOURCE).toBe('sockets');
    expect(pod.containers[0].securityContext).toEqual({ privileged: true });
  });

  it('refuses vmSource sockets without the single-tenant acknowledgement, naming the value', async () => {
    const r = await helm(['template', 'vmsnap', chartDir, '--set', 'agent.vmSource=sockets']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('agent.singleTenantHostsAcknowledged=true');
    expect(r.stderr).toContain('relaunch QEMU as root');
  });

  it('renders the operator restricted by default, the metrics port "off" when 0, and security contexts from values', async () => {
    const deploy = await renderOne('Deployment', 'templates/operator-deployment.yaml', ['operator.metricsPort=0']);
    const pod = deploy.spec.template.spec;
    expect(pod.securityContext).toEqual({ runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.containers[0].securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    expect(envOf(pod.containers[0]).VMSNAP_METRICS_PORT).toBe('off');
    const ds = await renderOne('DaemonSet', 'templates/agent-daemonset.yaml', ['agent.podSecurityContext.runAsUser=0', 'agent.securityContext.readOnlyRootFilesystem=false']);
    expect(ds.spec.template.spec.securityContext).toEqual({ runAsUser: 0 });
    expect(ds.spec.template.spec.containers[0].securityContext).toMatchObject({ privileged: false, readOnlyRootFilesystem: false });
    // The way back for a node where the named capabilities are not enough.
    const privileged = await renderOne('DaemonSet', 'templates/agent-daemonset.yaml', ['agent.privileged=true']);
    expect(privileged.spec.template.spec.containers[0].securityContext).toEqual({ privileged: true });
  });

  it('renders the metrics Service for the operator pods, a ServiceMonitor only when enabled, a PDB and the dashboard', async () => {
    const deployment = await renderOne('Deployment', 'templates/operator-deployment.yaml');
    const service = await renderOne('Service', 'templates/operator-metrics.yaml');
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
    expect(service.spec.ports).toEqual([{ name: 'metrics', port: 8080, targetPort: 'metrics', protocol: 'TCP' }]);
    expect(deployment.spec.template.spec.containers[0].ports).toContainEqual({ name: 'metrics', containerPort: 8080, protocol: 'TCP' });
    const byDefault = docsOf(await helmOk(['template', 'vmsnap', chartDir, '--namespace', 'vmsnap-system']));
    expect(byDefault.some((d) => d.kind === 'ServiceMonitor')).toBe(false);
    const monitor = await renderOne('ServiceMonitor', 'templates/operator-metrics.yaml', ['operator.serviceMonitor.enabled=true', 'operator.serviceMonitor.labels.release=prom']);
    expect(monitor.metadata.labels.release).toBe('prom');
    expect(monitor.spec).toMatchObject({ selector: { matchLabels: deployment.spec.selector.matchLabels }, endpoints: [{ port: 'metrics', path: '/metrics', interval: '30s' }] });
    const off = await helm(['template', 'vmsnap', chartDir, '--set', 'operator.metricsPort=0', '--set', 'operator.serviceMonitor.enabled=true']);
    expect(off.code).not.toBe(0);
    expect(off.stderr).toMatch(/operator\.serviceMonitor\.enabled needs operator\.metricsPort/);

    const pdb = await renderOne('PodDisruptionBudget', 'templates/operator-pdb.yaml');
    expect(pdb.spec).toEqual({ maxUnavailable: 1, selector: { matchLabels: deployment.spec.selector.matchLabels } });
    const badPdb = await helm(['template', 'vmsnap', chartDir, '--set', 'operator.podDisruptionBudget.maxUnavailable=lots']);
    expect(badPdb.code).not.toBe(0);
    expect(badPdb.stderr).toMatch(/maxUnavailable/);

    // `helm test`: the release's image checks the CRDs and the operator's /readyz through that Service.
    const testPod = await renderOne('Pod', 'templates/tests/operator-ready.yaml');
    expect(testPod.metadata.annotations['helm.sh/hook']).toBe('test');
    expect(testPod.spec).toMatchObject({ serviceAccountName: 'vmsnap-operator', restartPolicy: 'Never' });
    expect(testPod.spec.containers[0]).toMatchObject({ image: deployment.spec.template.spec.containers[0].image, command: ['node', 'dist/operator/self-test.js'] });
    expect(envOf(testPod.spec.containers[0]).VMSNAP_READYZ_URL).toBe('http://vmsnap-operator-metrics.vmsnap-system.svc:8080/readyz');
    const local = await renderOne('Pod', 'templates/tests/operator-ready.yaml', ['operator.hostNetwork=true']);
    expect(envOf(local.spec.containers[0]).VMSNAP_READYZ_URL).toBe('http://$(HOST_IP):8080/readyz');

    const dashboard = await renderOne('ConfigMap', 'templates/grafana-dashboard.yaml', ['grafanaDashboard.namespace=monitoring']);
    expect(dashboard.metadata).toMatchObject({ namespace: 'monitoring', labels: { grafana_dashboard: '1' } });
    expect(JSON.parse(dashboard.data['vmsnap.json'])).toEqual(JSON.parse(readFileSync(path.join(chartDir, 'dashboards/vmsnap.json'), 'utf8')));
  });

  it("renders a PodMonitor for the agent pods' metrics port only when enabled, and refuses it without probes", async () => {
    const byDefault = docsOf(await helmOk(['template', 'vmsnap', chartDir, '--namespace', 'vmsnap-system']));
    expect(byDefault.some((d) => d.kind === 'PodMonitor')).toBe(false);
    const sets = ['agent.podMonitor.enabled=true', 'agent.podMonitor.labels.release=prom', 'agent.podMonitor.interval=15s', 'agent.probes.port=9102'];
    const monitor = await renderOne('PodMonitor', 'templates/agent-podmonitor.yaml', sets);
    const ds = await renderOne('DaemonSet', 'templates/agent-daemonset.yaml', sets);
    const operator = await renderOne('Deployment', 'templates/operator-deployment.yaml', sets);
    expect(monitor.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(monitor.metadata.labels.release).toBe('prom');
    expect(monitor.spec.namespaceSelector).toEqual({ matchNames: ['vmsnap-system'] });
    // It selects the agent pods (and not the operator's), on the port the agent serves /metrics on.
    const selector: Obj = monitor.spec.selector.matchLabels;
    expect(selector).toEqual(ds.spec.selector.matchLabels);
    expect(ds.spec.template.metadata.labels).toMatchObject(selector);
    expect(operator.spec.template.metadata.labels).not.toMatchObject(selector);
    expect(monitor.spec.podMetricsEndpoints).toEqual([{ port: 'metrics', path: '/metrics', interval: '15s', honorLabels: true }]);
    const agent = ds.spec.template.spec.containers[0];
    expect(agent.ports).toContainEqual({ name: 'metrics', containerPort: 9102, protocol: 'TCP' });
    expect(envOf(agent).VMSNAP_HEALTH_PORT).toBe('9102');

    const noProbes = await helm(['template', 'vmsnap', chartDir, '--set', 'agent.podMonitor.enabled=true', '--set', 'agent.probes.enabled=false']);
    expect(noProbes.code).not.toBe(0);
    expect(noProbes.stderr).toContain('agent.podMonitor.enabled needs agent.probes.enabled');
    const badInterval = await helm(['template', 'vmsnap', chartDir, '--set', 'agent.podMonitor.interval=often']);
    expect(badInterval.code).not.toBe(0);
    expect(badInterval.stderr).toMatch(/podMonitor\/interval/);
  });

  it('lets every authenticated user read VMSnapshotClasses by default, and nobody when classReaders is []', async () => {
    const binding = await renderOne('ClusterRoleBinding', 'templates/user-rbac.yaml');
    expect(binding.subjects).toEqual([{ kind: 'Group', name: 'system:authenticated', apiGroup: 'rbac.authorization.k8s.io' }]);
    const role = await renderOne('ClusterRole', 'templates/user-rbac.yaml', ['rbac.aggregateToDefaultRoles=false']);
    expect(role.rules).toEqual([{ apiGroups: ['vmsnap.io'], resources: ['vmsnapshotclasses'], verbs: ['get', 'list', 'watch'] }]);
    const none = docsOf(await helmOk(['template', 'vmsnap', chartDir, '--show-only', 'templates/user-rbac.yaml', '--set-json', 'rbac.classReaders=[]']));
    expect(none.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual(['ClusterRole/vmsnap-edit', 'ClusterRole/vmsnap-view']);
  });

  it('renders a default VMSnapshotClass that the API server accepts', async () => {
    const rendered = docsOf(
      await helmOk(['template', 'vmsnap', chartDir, '--set', 'defaultClass.create=true', '--set', 'defaultClass.channels=16', '--show-only', 'templates/default-class.yaml']),
    );
    expect(rendered).toHaveLength(1);
    const cls = rendered[0]!;
    expect(cls).toMatchObject({
      apiVersion: API_VERSION,
      kind: 'VMSnapshotClass',
      metadata: { name: 'default', annotations: { 'vmsnap.io/is-default-class': 'true' } },
      parallelism: { channels: 16 },
      directIO: 'Auto',
      deletionPolicy: 'Delete',
    });
    // Dry run only: a real default class would change what concurrent tests see.
    const r = await kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], { input: JSON.stringify(cls) });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/vmsnapshotclass\.vmsnap\.io\/default (created|configured|unchanged) \(server dry run\)/);
  });

  it.each([
    ['operator.replicas=-1', '/operator/replicas'],
    ['image.pullPolicy=Sometimes', '/image/pullPolicy'],
    ['logLevel=loud', '/logLevel'],
    ['agent.inventoryIntervalSeconds=1', '/agent/inventoryIntervalSeconds'],
    ['defaultClass.channels=65', '/defaultClass/channels'],
    ['defaultClass.directIO=On', '/defaultClass/directIO'],
    ['operator.unknownSetting=1', '/operator'],
    ['agent.vmSource=dirs', '/agent/vmSource'],
    ['agent.kubeletRootDir=var/lib/kubelet', '/agent/kubeletRootDir'],
    ['agent.probes.port=0', '/agent/probes/port'],
    ['apiServer.port=70000', '/apiServer/port'],
    ['agent.hostNetwork=yes', '/agent/hostNetwork'],
  ])('values schema refuses --set %s, naming %s', async (setting, pointer) => {
    const r = await helm(['template', 'vmsnap', chartDir, '--set', setting]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`at '${pointer}'`);
  });
});

describe('Pod Security levels (the API server\'s PodSecurity admission)', () => {
  const podFrom = async (kind: string, template: string, ns: string) => {
    const docs = docsOf(await helmOk(['template', 'vmsnap', chartDir, '--namespace', ns, '--show-only', template]));
    const workload = docs.find((d) => d.kind === kind)!;
    return { apiVersion: 'v1', kind: 'Pod', metadata: { name: `${kind.toLowerCase()}-probe`, namespace: ns }, spec: workload.spec.template.spec };
  };
  const namespaceAt = async (level: string) => {
    const ns = await createNamespace(`psa-${level}`);
    await kubectlOk(['label', 'namespace', ns, `pod-security.kubernetes.io/enforce=${level}`]);
    return ns;
  };
  const dryRun = (pod: Obj) => kubectl(['apply', '--dry-run=server', '-f', '-'], { input: JSON.stringify(pod) });

  it('the agent needs a privileged namespace: baseline refuses it, naming hostPID, hostPath and SYS_PTRACE', async () => {
    const baseline = await namespaceAt('baseline');
    const refused = await dryRun(await podFrom('DaemonSet', 'templates/agent-daemonset.yaml', baseline));
    expect(refused.code).not.toBe(0);
    for (const what of ['hostPID', 'hostPath volumes', 'non-default capabilities', '"SYS_PTRACE"']) expect(refused.stderr).toContain(what);
    const privileged = await namespaceAt('privileged');
    const accepted = await dryRun(await podFrom('DaemonSet', 'templates/agent-daemonset.yaml', privileged));
    expect(accepted.stderr).toBe('');
    expect(accepted.code).toBe(0);
  });

  it('the operator runs under restricted', async () => {
    const restricted = await namespaceAt('restricted');
    const r = await dryRun(await podFrom('Deployment', 'templates/operator-deployment.yaml', restricted));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});

describe('helm install into the local control plane', () => {
  let sys: string; // the release namespace
  let work: string; // where users' VMSnapshots live
  let other: string; // a namespace vmsnap has no business in
  const tokens: Record<string, string> = {};
  let podBoundAgentToken: string;

  const snapPath = () => `${API_PREFIX}/namespaces/${work}/vmsnapshots/snap`;
  const restorePath = () => `${API_PREFIX}/namespaces/${work}/vmrestores/rest`;
  const inventoryPath = (name = node) => `${API_PREFIX}/vminventories/${name}`;
  const leasePath = (ns: string, name = '') => `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases${name ? `/${name}` : ''}`;

  beforeAll(async () => {
    await ensureCrds();
    [sys, work, other] = await Promise.all([createNamespace('helm-sys'), createNamespace('helm-work'), createNamespace('helm-other')]);
    // Class readers: the users of namespace work (the default, system:authenticated, would also
    // let the agent read classes, which its least-privilege checks below refuse).
    const classReaders = JSON.stringify([{ kind: 'Group', name: `system:serviceaccounts:${work}` }]);
    await helmOk(['install', release, chartDir, '--namespace', sys, '--skip-crds', '--set-json', `rbac.classReaders=${classReaders}`]);

    // Objects the checks below act on, created as the admin.
    const manifests = [
      vmSnapshot({ name: 'snap', namespace: work }, { vmName: 'demo' }),
      vmRestore({ name: 'rest', namespace: work }, { snapshotName: 'snap' }),
      { apiVersion: API_VERSION, kind: 'VMInventory', metadata: { name: `${node}-other` } },
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'precious', namespace: work }, stringData: { key: 'value' } },
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'editor', namespace: work } },
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'viewer', namespace: work } },
      // A user granted the chart's aggregated roles in one namespace (no controller-manager runs
      // here to aggregate them into admin/edit/view, so they are bound directly).
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'editor', namespace: work },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `${release}-edit` },
        subjects: [{ kind: 'ServiceAccount', name: 'editor', namespace: work }],
      },
      // A namespace editor may also create pods (the built-in `edit` role does): a VMRestore can make one.
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'pod-creator', namespace: work }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['create'] }] },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'editor-pods', namespace: work },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'pod-creator' },
        subjects: [{ kind: 'ServiceAccount', name: 'editor', namespace: work }],
      },
      // The chart's edit role alone, without the right to create pods.
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'podless', namespace: work } },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'podless', namespace: work },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `${release}-edit` },
        subjects: [{ kind: 'ServiceAccount', name: 'podless', namespace: work }],
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'viewer', namespace: work },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `${release}-view` },
        subjects: [{ kind: 'ServiceAccount', name: 'viewer', namespace: work }],
      },
      // A node and an agent pod on it (never started: no kubelet), so TokenRequest can issue the
      // agent a pod-bound token that carries the node name, as the kubelet does for real pods.
      { apiVersion: 'v1', kind: 'Node', metadata: { name: node, labels: { 'vmsnap-test-run': RUN_ID } } },
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'agent-on-node', namespace: sys },
        spec: { nodeName: node, serviceAccountName: 'vmsnap-agent', containers: [{ name: 'agent', image: 'vmsnap:0.1.0' }] },
      },
    ];
    await kubectlOk(['apply', '-f', '-'], { input: manifests.map((m) => JSON.stringify(m)).join('\n') });

    const token = async (ns: string, sa: string, ...extra: string[]) =>
      (await kubectlOk(['create', 'token', sa, '-n', ns, '--duration=1h', ...extra])).trim();
    tokens.operator = await token(sys, 'vmsnap-operator');
    tokens.agent = await token(sys, 'vmsnap-agent');
    tokens.editor = await token(work, 'editor');
    tokens.viewer = await token(work, 'viewer');
    tokens.podless = await token(work, 'podless');
    podBoundAgentToken = await token(sys, 'vmsnap-agent', '--bound-object-kind=Pod', '--bound-object-name=agent-on-node');

    // New bindings reach the authorizer through an informer.
    for (const who of ['operator', 'agent', 'viewer', 'podless'] as const) {
      await poll(`the ${who} role to reach the authorizer`, async () => (await apiRequest(`${API_PREFIX}/namespaces/${work}/vmsnapshots`, { token: tokens[who] })).status === 200, 15_000);
    }
    await poll('the editor role to reach the authorizer', async () => (await apiRequest(`${API_PREFIX}/namespaces/${work}/vmsnapshots`, { token: tokens.editor })).status === 200, 15_000);
  }, CLUSTER_STARTUP_TIMEOUT_MS);

  afterAll(async () => {
    // Cluster-scoped leftovers; the namespaces stay (no controller-manager empties them).
    if (sys) await helm(['uninstall', release, '--namespace', sys]);
    await kubectl(['delete', 'pod', 'agent-on-node', '-n', sys, '--grace-period=0', '--force', '--ignore-not-found']);
    await kubectl(['delete', 'node', node, '--ignore-not-found', '--wait=false']);
    await kubectl(['delete', 'vminventories', node, `${node}-other`, '--ignore-not-found', '--wait=false']);
  });

  it('is listed by helm as deployed', async () => {
    const list = JSON.parse(await helmOk(['list', '--namespace', sys, '-o', 'json'])) as Array<{ name: string; status: string }>;
    expect(list).toEqual([expect.objectContaining({ name: release, status: 'deployed' })]);
  });

  it('created the operator Deployment and agent DaemonSet with their ServiceAccounts and config', async () => {
    const deploy = JSON.parse(await kubectlOk(['get', 'deployment', `${release}-operator`, '-n', sys, '-o', 'json'])) as Obj;
    expect(deploy.spec.template.spec.serviceAccountName).toBe('vmsnap-operator');
    expect(deploy.spec.template.spec.containers[0].image).toBe('vmsnap:0.1.0');

    const ds = JSON.parse(await kubectlOk(['get', 'daemonset', `${release}-agent`, '-n', sys, '-o', 'json'])) as Obj;
    expect(ds.spec.template.spec.serviceAccountName).toBe('vmsnap-agent');
    expect(ds.spec.template.spec.containers[0].securityContext).toMatchObject({ privileged: false, capabilities: { drop: ['ALL'], add: [...AGENT_CAPABILITIES] } });

    const sas = await kubectlOk(['get', 'serviceaccounts', '-n', sys, '-o', 'name']);
    expect(sas).toMatch(/^serviceaccount\/vmsnap-operator$/m);
    expect(sas).toMatch(/^serviceaccount\/vmsnap-agent$/m);

    const cm = JSON.parse(await kubectlOk(['get', 'configmap', `${release}-agent-config`, '-n', sys, '-o', 'json'])) as Obj;
    const config = AgentConfigSchema.parse(JSON.parse(cm.data['config.json'] as string));
    expect(config).toMatchObject({ vmRoot: '/var/lib/vmsnap/vms', storageRoot: '/var/lib/vmsnap/snapshots' });

    const rbac = await kubectlOk(['get', 'clusterroles,clusterrolebindings', '-l', `app.kubernetes.io/instance=${release}`, '-o', 'name']);
    for (const name of [`clusterrole.rbac.authorization.k8s.io/${release}-operator`, `clusterrole.rbac.authorization.k8s.io/${release}-agent`,
      `clusterrolebinding.rbac.authorization.k8s.io/${release}-operator`, `clusterrolebinding.rbac.authorization.k8s.io/${release}-agent`]) {
      expect(rbac.split('\n')).toContain(name);
    }
    const policy = await kubectlOk(['get', 'validatingadmissionpolicies,validatingadmissionpolicybindings', '-o', 'name', '-l', `app.kubernetes.io/instance=${release}`]);
    // Five policies (agent node and work restrictions, object rules, the operator's schedule
    // restriction, restore pod permission), each with its binding.
    expect(policy.trim().split('\n')).toHaveLength(10);
  });

  // ---- ServiceAccounts against the API, one real request per check ----------------------------

  type Who = 'operator' | 'agent' | 'editor' | 'viewer' | 'podless' | 'anonymous';
  interface Check {
    who: Who;
    what: string;
    method?: string;
    path: () => string;
    body?: () => unknown | Promise<unknown>;
    contentType?: string;
    watch?: boolean;
    /** HTTP status: 2xx where allowed, 403 where RBAC must refuse. */
    status: number;
  }

  const event = (ns: string, who: string) => ({
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { name: `snap.${who}-${randomBytes(4).toString('hex')}`, namespace: ns },
    involvedObject: { apiVersion: API_VERSION, kind: 'VMSnapshot', name: 'snap', namespace: ns },
    reason: 'Saving',
    message: `${who} test event`,
    type: 'Normal',
    source: { component: `vmsnap-${who}` },
    firstTimestamp: new Date().toISOString(),
    lastTimestamp: new Date().toISOString(),
    count: 1,
  });
  const newEvent = (ns: string, who: string) => ({
    apiVersion: 'events.k8s.io/v1',
    kind: 'Event',
    metadata: { name: `snap.${who}-${randomBytes(4).toString('hex')}`, namespace: ns },
    regarding: { apiVersion: API_VERSION, kind: 'VMSnapshot', name: 'snap', namespace: ns },
    reason: 'Saving',
    action: 'Save',
    note: `${who} test event`,
    type: 'Normal',
    eventTime: new Date().toISOString().replace('Z', '000Z'),
    reportingController: `vmsnap.io/${who}`,
    reportingInstance: `${who}-0`,
  });
  const lease = (name: string) => ({
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name },
    spec: { holderIdentity: 'operator-0', leaseDurationSeconds: 15, renewTime: new Date().toISOString().replace('Z', '000Z') },
  });
  /** The stored object, changed by `edit`, for a PUT. */
  const current = (p: () => string, edit: (o: Obj) => void) => async () => {
    const r = await apiRequest(p(), { admin: true });
    const o = JSON.parse(r.body) as Obj;
    edit(o);
    return o;
  };
  const all = (plural: string) => () => `${API_PREFIX}/${plural}`;
  const inWork = (plural: string) => () => `${API_PREFIX}/namespaces/${work}/${plural}`;
  const newSnapshot = () => ({ apiVersion: API_VERSION, kind: 'VMSnapshot', metadata: { name: `s-${randomBytes(3).toString('hex')}` }, spec: { vmName: 'demo' } });
  /** A schedule's run, as the operator makes it (the owner need not exist for admission). */
  const scheduled = (label = 'nightly') => ({
    ...newSnapshot(),
    metadata: {
      name: 'nightly-demo-1',
      labels: { 'vmsnap.io/schedule': label },
      ownerReferences: [{ apiVersion: API_VERSION, kind: 'VMSnapshotSchedule', name: 'nightly', uid: '8d3c6f0e-0000-4000-8000-000000000001', controller: true }],
    },
  });
  const newRestore = () => ({ apiVersion: API_VERSION, kind: 'VMRestore', metadata: { name: `r-${randomBytes(3).toString('hex')}` }, spec: { snapshotName: 'snap' } });

  // Allowed checks run in order (later ones use what earlier ones created).
  const operatorAllowed: Check[] = [
    { who: 'operator', what: 'list VMSnapshots in all namespaces', path: all('vmsnapshots'), status: 200 },
    { who: 'operator', what: 'read the VMSnapshot CRD (its revision, at start-up)', path: () => '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/vmsnapshots.vmsnap.io', status: 200 },
    { who: 'operator', what: 'watch VMSnapshots in all namespaces', path: () => `${all('vmsnapshots')()}?${WATCH}`, watch: true, status: 200 },
    { who: 'operator', what: 'list VMRestores in all namespaces', path: all('vmrestores'), status: 200 },
    { who: 'operator', what: 'watch VMRestores in all namespaces', path: () => `${all('vmrestores')()}?${WATCH}`, watch: true, status: 200 },
    { who: 'operator', what: 'get a VMSnapshot', path: snapPath, status: 200 },
    { who: 'operator', what: 'add its finalizer to a VMSnapshot (patch)', method: 'PATCH', path: snapPath, body: () => ({ metadata: { finalizers: ['vmsnap.io/snapshot-file'] } }), status: 200 },
    { who: 'operator', what: 'update a VMSnapshot (put)', method: 'PUT', path: snapPath, body: current(snapPath, (o) => { o.metadata.labels = { reconciled: 'yes' }; }), status: 200 },
    { who: 'operator', what: 'patch VMSnapshot status', method: 'PATCH', path: () => `${snapPath()}/status`, body: () => ({ status: { phase: 'Pending', nodeName: node, observedGeneration: 1 } }), status: 200 },
    { who: 'operator', what: 'update VMSnapshot status (put)', method: 'PUT', path: () => `${snapPath()}/status`, body: current(snapPath, (o) => { o.status = { ...o.status, phase: 'InProgress' }; }), status: 200 },
    { who: 'operator', what: 'add its finalizer to a VMRestore (patch)', method: 'PATCH', path: restorePath, body: () => ({ metadata: { finalizers: ['vmsnap.io/restore'] } }), status: 200 },
    { who: 'operator', what: 'patch VMRestore status', method: 'PATCH', path: () => `${restorePath()}/status`, body: () => ({ status: { phase: 'Pending' } }), status: 200 },
    { who: 'operator', what: 'list VMSnapshotClasses', path: all('vmsnapshotclasses'), status: 200 },
    { who: 'operator', what: 'watch VMSnapshotClasses', path: () => `${all('vmsnapshotclasses')()}?${WATCH}`, watch: true, status: 200 },
    { who: 'operator', what: 'list VMInventories', path: all('vminventories'), status: 200 },
    { who: 'operator', what: 'watch VMInventories', path: () => `${all('vminventories')()}?${WATCH}`, watch: true, status: 200 },
    { who: 'operator', what: 'create an Event (core/v1)', method: 'POST', path: () => `/api/v1/namespaces/${work}/events`, body: () => event(work, 'operator'), status: 201 },
    { who: 'operator', what: 'create an Event (events.k8s.io/v1)', method: 'POST', path: () => `/apis/events.k8s.io/v1/namespaces/${work}/events`, body: () => newEvent(work, 'operator'), status: 201 },
    { who: 'operator', what: 'create its leader Lease', method: 'POST', path: () => leasePath(sys), body: () => lease('vmsnap-operator'), status: 201 },
    { who: 'operator', what: 'get its leader Lease', path: () => leasePath(sys, 'vmsnap-operator'), status: 200 },
    { who: 'operator', what: 'renew its leader Lease (put)', method: 'PUT', path: () => leasePath(sys, 'vmsnap-operator'), body: current(() => leasePath(sys, 'vmsnap-operator'), (o) => { o.spec.leaseTransitions = 1; }), status: 200 },
    { who: 'operator', what: 'patch its leader Lease', method: 'PATCH', path: () => leasePath(sys, 'vmsnap-operator'), body: () => ({ spec: { holderIdentity: 'operator-1' } }), status: 200 },
    { who: 'operator', what: 'list VM Pods (copies and wakes run in pods it makes)', path: () => '/api/v1/pods?labelSelector=vmsnap.io%2Fvm', status: 200 },
    { who: 'operator', what: 'watch VMSnapshotSchedules in all namespaces', path: () => `${all('vmsnapshotschedules')()}?${WATCH}`, watch: true, status: 200 },
    { who: 'operator', what: "create a VMSnapshotSchedule's run (a VMSnapshot it controls)", method: 'POST', path: inWork('vmsnapshots'), body: () => scheduled(), status: 201 },
    { who: 'operator', what: "delete a VMSnapshotSchedule's VMSnapshot (retention)", method: 'DELETE', path: () => `${inWork('vmsnapshots')()}/nightly-demo-1`, status: 200 },
  ];

  const operatorForbidden: Check[] = [
    { who: 'operator', what: 'list CRDs', path: () => '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', status: 403 },
    { who: 'operator', what: 'create a VMSnapshot no VMSnapshotSchedule controls (admission policy)', method: 'POST', path: inWork('vmsnapshots'), body: newSnapshot, status: 403 },
    { who: 'operator', what: 'create a VMSnapshot owned by a schedule but labelled for another (admission policy)', method: 'POST', path: inWork('vmsnapshots'), body: () => scheduled('other-schedule'), status: 403 },
    { who: 'operator', what: "delete a user's VMSnapshot (admission policy)", method: 'DELETE', path: snapPath, status: 403 },
    { who: 'operator', what: 'create a VMRestore', method: 'POST', path: inWork('vmrestores'), body: newRestore, status: 403 },
    { who: 'operator', what: 'delete a VMRestore', method: 'DELETE', path: restorePath, status: 403 },
    { who: 'operator', what: 'create a VMSnapshotClass', method: 'POST', path: all('vmsnapshotclasses'), body: () => ({ apiVersion: API_VERSION, kind: 'VMSnapshotClass', metadata: { name: `c-${RUN_ID}` } }), status: 403 },
    { who: 'operator', what: 'write a VMInventory (agents own them)', method: 'PATCH', path: () => `${inventoryPath(`${node}-other`)}/status`, body: () => ({ status: { vmCount: 0 } }), status: 403 },
    { who: 'operator', what: 'read a Secret in a user namespace', path: () => `/api/v1/namespaces/${work}/secrets/precious`, status: 403 },
    { who: 'operator', what: 'list Secrets in all namespaces', path: () => '/api/v1/secrets', status: 403 },
    { who: 'operator', what: 'list Secrets in its own namespace', path: () => `/api/v1/namespaces/${sys}/secrets`, status: 403 },
    { who: 'operator', what: 'exec into a Pod', method: 'POST', path: () => `/api/v1/namespaces/${sys}/pods/agent-on-node/exec?command=true&stdout=true`, status: 403 },
    { who: 'operator', what: 'read a Pod log', path: () => `/api/v1/namespaces/${sys}/pods/agent-on-node/log`, status: 403 },
    { who: 'operator', what: 'list Nodes', path: () => '/api/v1/nodes', status: 403 },
    { who: 'operator', what: 'create a Lease in another namespace', method: 'POST', path: () => leasePath(other), body: () => lease('vmsnap-operator'), status: 403 },
    { who: 'operator', what: 'read the kube-system Leases', path: () => leasePath('kube-system'), status: 403 },
    { who: 'operator', what: 'list Leases in its own namespace', path: () => leasePath(sys), status: 403 },
    { who: 'operator', what: 'update a Lease it does not own', method: 'PATCH', path: () => leasePath(sys, 'someone-else'), body: () => ({ spec: { holderIdentity: 'operator-0' } }), status: 403 },
    { who: 'operator', what: 'delete its Lease', method: 'DELETE', path: () => leasePath(sys, 'vmsnap-operator'), status: 403 },
    { who: 'operator', what: 'mint a token for the agent', method: 'POST', path: () => `/api/v1/namespaces/${sys}/serviceaccounts/vmsnap-agent/token`, body: () => ({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: {} }), status: 403 },
    { who: 'operator', what: 'bind itself a ClusterRole', method: 'POST', path: () => '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', body: () => ({ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: `x-${RUN_ID}` }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' }, subjects: [{ kind: 'ServiceAccount', name: 'vmsnap-operator', namespace: sys }] }), status: 403 },
  ];

  const agentAllowed: Check[] = [
    { who: 'agent', what: 'list VMSnapshots in all namespaces', path: all('vmsnapshots'), status: 200 },
    { who: 'agent', what: 'watch VMSnapshots in all namespaces', path: () => `${all('vmsnapshots')()}?${WATCH}`, watch: true, status: 200 },
    { who: 'agent', what: 'list VMRestores in all namespaces', path: all('vmrestores'), status: 200 },
    { who: 'agent', what: 'watch VMRestores in all namespaces', path: () => `${all('vmrestores')()}?${WATCH}`, watch: true, status: 200 },
    { who: 'agent', what: 'get a VMSnapshot', path: snapPath, status: 200 },
    { who: 'agent', what: 'patch VMSnapshot status (progress)', method: 'PATCH', path: () => `${snapPath()}/status`, body: () => ({ status: { phase: 'InProgress', progress: { bytesDone: 1, bytesTotal: 2, percent: 50 } } }), status: 200 },
    { who: 'agent', what: 'patch VMRestore status', method: 'PATCH', path: () => `${restorePath()}/status`, body: () => ({ status: { phase: 'InProgress' } }), status: 200 },
    { who: 'agent', what: "create its node's VMInventory", method: 'POST', path: all('vminventories'), body: () => ({ apiVersion: API_VERSION, kind: 'VMInventory', metadata: { name: node } }), status: 201 },
    { who: 'agent', what: "get its node's VMInventory", path: () => inventoryPath(), status: 200 },
    { who: 'agent', what: "patch its node's VMInventory", method: 'PATCH', path: () => inventoryPath(), body: () => ({ metadata: { labels: { 'vmsnap-test-run': RUN_ID } } }), status: 200 },
    { who: 'agent', what: "patch its node's VMInventory status", method: 'PATCH', path: () => `${inventoryPath()}/status`, body: () => ({ status: { nodeName: node, vmCount: 0, vms: [] } }), status: 200 },
    { who: 'agent', what: "update its node's VMInventory status (put)", method: 'PUT', path: () => `${inventoryPath()}/status`, body: current(() => inventoryPath(), (o) => { o.status = { nodeName: node, vmCount: 0 }; }), status: 200 },
    { who: 'agent', what: 'create an Event (core/v1)', method: 'POST', path: () => `/api/v1/namespaces/${work}/events`, body: () => event(work, 'agent'), status: 201 },
    { who: 'agent', what: 'list the Pods on its node (VMs are Pods)', path: () => `/api/v1/pods?fieldSelector=spec.nodeName%3D${node}`, status: 200 },
    { who: 'agent', what: 'watch the Pods on its node', path: () => `/api/v1/pods?fieldSelector=spec.nodeName%3D${node}&${WATCH}`, watch: true, status: 200 },
    { who: 'agent', what: 'create an Event (events.k8s.io/v1)', method: 'POST', path: () => `/apis/events.k8s.io/v1/namespaces/${work}/events`, body: () => newEvent(work, 'agent'), status: 201 },
  ];

  const agentForbidden: Check[] = [
    { who: 'agent', what: 'delete a VMSnapshot', method: 'DELETE', path: snapPath, status: 403 },
    { who: 'agent', what: 'patch a VMSnapshot spec', method: 'PATCH', path: snapPath, body: () => ({ spec: { deletionPolicy: 'Retain' } }), status: 403 },
    { who: 'agent', what: 'remove the finalizers of a VMSnapshot', method: 'PATCH', path: snapPath, body: () => ({ metadata: { finalizers: null } }), status: 403 },
    { who: 'agent', what: 'update a VMSnapshot (put)', method: 'PUT', path: snapPath, body: current(snapPath, (o) => { o.spec.deletionPolicy = 'Retain'; }), status: 403 },
    { who: 'agent', what: 'replace VMSnapshot status (put; it patches)', method: 'PUT', path: () => `${snapPath()}/status`, body: current(snapPath, (o) => { o.status = { phase: 'Succeeded' }; }), status: 403 },
    { who: 'agent', what: 'create a VMSnapshot', method: 'POST', path: inWork('vmsnapshots'), body: newSnapshot, status: 403 },
    { who: 'agent', what: 'create a VMRestore', method: 'POST', path: inWork('vmrestores'), body: newRestore, status: 403 },
    { who: 'agent', what: 'delete a VMRestore', method: 'DELETE', path: restorePath, status: 403 },
    { who: 'agent', what: 'delete a VMInventory', method: 'DELETE', path: () => inventoryPath(`${node}-other`), status: 403 },
    { who: 'agent', what: 'list VMInventories (it reads its own by name)', path: all('vminventories'), status: 403 },
    { who: 'agent', what: 'list VMSnapshotClasses (the operator resolves them)', path: all('vmsnapshotclasses'), status: 403 },
    { who: 'agent', what: 'read a Secret in a user namespace', path: () => `/api/v1/namespaces/${work}/secrets/precious`, status: 403 },
    { who: 'agent', what: 'list Secrets in all namespaces', path: () => '/api/v1/secrets', status: 403 },
    { who: 'agent', what: "read the operator's Lease", path: () => leasePath(sys, 'vmsnap-operator'), status: 403 },
    { who: 'agent', what: 'create a Lease in its namespace', method: 'POST', path: () => leasePath(sys), body: () => lease('vmsnap-agent'), status: 403 },
    { who: 'agent', what: 'create a Lease in another namespace', method: 'POST', path: () => leasePath(other), body: () => lease('vmsnap-agent'), status: 403 },
    { who: 'agent', what: 'delete a Pod', method: 'DELETE', path: () => `/api/v1/namespaces/${sys}/pods/agent-on-node`, status: 403 },
    { who: 'agent', what: 'create a Pod', method: 'POST', path: () => `/api/v1/namespaces/${work}/pods`, body: () => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [{ name: 'x', image: 'x' }] } }), status: 403 },
    { who: 'agent', what: 'exec into a Pod', method: 'POST', path: () => `/api/v1/namespaces/${sys}/pods/agent-on-node/exec?command=true&stdout=true`, status: 403 },
    { who: 'agent', what: 'list Nodes', path: () => '/api/v1/nodes', status: 403 },
    { who: 'agent', what: 'bind itself a ClusterRole', method: 'POST', path: () => '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', body: () => ({ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: `y-${RUN_ID}` }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' }, subjects: [{ kind: 'ServiceAccount', name: 'vmsnap-agent', namespace: sys }] }), status: 403 },
  ];

  const usersAndAnonymous: Check[] = [
    { who: 'editor', what: 'create a VMSnapshot in its namespace', method: 'POST', path: inWork('vmsnapshots'), body: () => ({ ...newSnapshot(), metadata: { name: 'by-editor' } }), status: 201 },
    { who: 'editor', what: 'delete a VMSnapshot in its namespace', method: 'DELETE', path: () => `${inWork('vmsnapshots')()}/by-editor`, status: 200 },
    { who: 'editor', what: 'create a VMRestore in its namespace', method: 'POST', path: inWork('vmrestores'), body: newRestore, status: 201 },
    // Admission (restore-pod-permission): a VMRestore can make a pod, so it needs the right to create pods.
    { who: 'podless', what: 'create a VMRestore without the right to create pods', method: 'POST', path: inWork('vmrestores'), body: () => ({ ...(newRestore() as object), metadata: { name: `podless-${RUN_ID}` } }), status: 403 },
    { who: 'editor', what: 'forge VMSnapshot status', method: 'PATCH', path: () => `${snapPath()}/status`, body: () => ({ status: { phase: 'Succeeded', readyToUse: true } }), status: 403 },
    { who: 'editor', what: 'create a VMSnapshot in another namespace', method: 'POST', path: () => `${API_PREFIX}/namespaces/${other}/vmsnapshots`, body: newSnapshot, status: 403 },
    { who: 'editor', what: 'create a VMSnapshotClass', method: 'POST', path: all('vmsnapshotclasses'), body: () => ({ apiVersion: API_VERSION, kind: 'VMSnapshotClass', metadata: { name: `e-${RUN_ID}` } }), status: 403 },
    // Classes are readable (the NOTES tell users to list them); other namespaces and the inventories stay hidden.
    { who: 'editor', what: 'list VMSnapshotClasses', path: all('vmsnapshotclasses'), status: 200 },
    { who: 'editor', what: 'watch VMSnapshotClasses', path: () => `${all('vmsnapshotclasses')()}?watch=true&timeoutSeconds=1`, watch: true, status: 200 },
    { who: 'editor', what: 'delete VMSnapshotClasses', method: 'DELETE', path: all('vmsnapshotclasses'), status: 403 },
    { who: 'editor', what: 'list VMInventories (every namespace\'s VMs)', path: all('vminventories'), status: 403 },
    { who: 'editor', what: 'list VMSnapshots of all namespaces', path: all('vmsnapshots'), status: 403 },
    { who: 'editor', what: 'list VMSnapshots in another namespace', path: () => `${API_PREFIX}/namespaces/${other}/vmsnapshots`, status: 403 },
    { who: 'viewer', what: 'list VMSnapshotClasses', path: all('vmsnapshotclasses'), status: 200 },
    { who: 'anonymous', what: 'list VMSnapshotClasses', path: all('vmsnapshotclasses'), status: 403 },
    { who: 'viewer', what: 'list VMSnapshots in its namespace', path: inWork('vmsnapshots'), status: 200 },
    { who: 'viewer', what: 'create a VMSnapshot', method: 'POST', path: inWork('vmsnapshots'), body: newSnapshot, status: 403 },
    { who: 'viewer', what: 'delete a VMRestore', method: 'DELETE', path: restorePath, status: 403 },
    { who: 'anonymous', what: 'list VMSnapshots', path: all('vmsnapshots'), status: 403 },
    { who: 'anonymous', what: 'create a VMSnapshot', method: 'POST', path: inWork('vmsnapshots'), body: newSnapshot, status: 403 },
    { who: 'anonymous', what: 'read a Secret', path: () => `/api/v1/namespaces/${work}/secrets/precious`, status: 403 },
    { who: 'anonymous', what: 'list VMInventories', path: all('vminventories'), status: 403 },
  ];

  async function perform(c: Check): Promise<{ status: number; body: string }> {
    const method = c.method ?? 'GET';
    return apiRequest(c.path(), {
      method,
      token: c.who === 'anonymous' ? undefined : tokens[c.who],
      body: c.body ? await c.body() : undefined,
      contentType: c.contentType,
      headersOnly: c.watch,
    });
  }

  const title = (c: Check) => `${c.who} ${c.status === 403 ? 'may not' : 'may'} ${c.what}`;

  it.each([...operatorAllowed, ...operatorForbidden, ...agentAllowed, ...agentForbidden, ...usersAndAnonymous].map((c) => [title(c), c] as const))(
    '%s',
    async (_t, c) => {
      const r = await perform(c);
      // An anonymous request is authenticated as system:anonymous (403); 401 would also refuse it.
      const status = c.who === 'anonymous' && r.status === 401 ? 403 : r.status;
      if (status !== c.status) throw new Error(`${title(c)}: expected HTTP ${c.status}, got ${r.status}: ${r.body.slice(0, 500)}`);
      if (c.status === 403) expect(r.body).toMatch(/forbidden/i);
    },
  );

  it.each([
    ['operator', 'update', 'vmsnapshots', 'finalizers', true],
    ['operator', 'update', 'vmrestores', 'finalizers', true],
    ['agent', 'update', 'vmsnapshots', 'finalizers', false],
    ['agent', 'patch', 'vmsnapshots', '', false],
    ['agent', 'deletecollection', 'vmsnapshots', '', false],
    ['operator', 'delete', 'vmsnapshots', '', true], // RBAC allows it; the admission policy holds it to schedules' VMSnapshots
    ['operator', 'escalate', 'clusterroles', '', false],
  ] as const)('SelfSubjectAccessReview: %s %s %s/%s in a user namespace is %s', async (who, verb, resource, subresource, allowed) => {
    const group = resource === 'clusterroles' ? 'rbac.authorization.k8s.io' : 'vmsnap.io';
    const r = await apiRequest('/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
      method: 'POST',
      token: tokens[who],
      body: {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SelfSubjectAccessReview',
        spec: { resourceAttributes: { group, resource, subresource, verb, namespace: work } },
      },
    });
    expect(r.status).toBe(201);
    expect((JSON.parse(r.body) as Obj).status.allowed ?? false).toBe(allowed);
  });

  it('the agent cannot change a spec through the status subresource either', async () => {
    const r = await apiRequest(`${snapPath()}/status`, {
      method: 'PATCH',
      token: tokens.agent,
      body: { spec: { vmName: 'someone-else', deletionPolicy: 'Retain' }, status: { phase: 'InProgress' } },
    });
    expect(r.status).toBe(200);
    const stored = JSON.parse((await apiRequest(snapPath(), { admin: true })).body) as Obj;
    expect(stored.spec.vmName).toBe('demo');
    expect(stored.spec.deletionPolicy).toBeUndefined();
  });

  it("an agent with a pod-bound token writes only its own node's VMInventory", async () => {
    const as = { token: podBoundAgentToken };
    const who = JSON.parse(await kubectlOk(['auth', 'whoami', '-o', 'json'], as)) as Obj;
    expect(who.status.userInfo.extra['authentication.kubernetes.io/node-name']).toEqual([node]);

    // The policy reaches the admission plugin through an informer: wait until it refuses.
    const foreign = () =>
      apiRequest(`${inventoryPath(`${node}-other`)}/status`, { method: 'PATCH', token: podBoundAgentToken, body: { status: { vmCount: 7 } } });
    let refused = { status: 0, body: '' };
    await poll('the foreign request to be refused', async () => {
      refused = await foreign();
      return refused.status === 403;
    }, 30_000);
    expect(refused.body).toContain(`may only write the VMInventory named ${node}, not ${node}-other`);
    expect(refused.body).toContain('metadata.name');

    const createAs = (name: string) =>
      apiRequest(all('vminventories')(), {
        method: 'POST',
        token: podBoundAgentToken,
        body: { apiVersion: API_VERSION, kind: 'VMInventory', metadata: { name } },
      });
    expect((await createAs(`${node}-forged`)).status).toBe(403);

    // Its own node's inventory: created (again, from scratch) and updated.
    await kubectlOk(['delete', 'vminventory', node, '--ignore-not-found']);
    expect((await createAs(node)).status).toBe(201);
    const own = await apiRequest(`${inventoryPath()}/status`, { method: 'PATCH', token: podBoundAgentToken, body: { status: { vmCount: 1 } } });
    expect(own.status).toBe(200);
    // The other node's inventory is untouched by the refused write.
    const other = JSON.parse((await apiRequest(inventoryPath(`${node}-other`), { admin: true })).body) as Obj;
    expect(other.status?.vmCount).toBeUndefined();
  });
  it("an agent with a pod-bound token writes only the status of its own node's VMSnapshots and VMRestores", async () => {
    const otherNode = `${node}-b`;
    const label = (n: string) => ({ 'vmsnap.io/node': n });
    // As the operator leaves them: labelled for a node, status.nodeName and (snapshots) the file set.
    const objects = [
      { apiVersion: API_VERSION, kind: 'VMSnapshot', metadata: { name: 'mine', namespace: work, labels: label(node) }, spec: { vmName: 'demo' } },
      { apiVersion: API_VERSION, kind: 'VMSnapshot', metadata: { name: 'theirs', namespace: work, labels: label(otherNode) }, spec: { vmName: 'demo' } },
      { apiVersion: API_VERSION, kind: 'VMSnapshot', metadata: { name: 'unassigned', namespace: work }, spec: { vmName: 'demo' } },
      { apiVersion: API_VERSION, kind: 'VMRestore', metadata: { name: 'mine', namespace: work, labels: label(node) }, spec: { snapshotName: 'mine' } },
      { apiVersion: API_VERSION, kind: 'VMRestore', metadata: { name: 'theirs', namespace: work, labels: label(otherNode) }, spec: { snapshotName: 'theirs' } },
    ];
    await kubectlOk(['apply', '-f', '-'], { input: objects.map((m) => JSON.stringify(m)).join('\n') });
    const at = (plural: string, name: string) => `${API_PREFIX}/namespaces/${work}/${plural}/${name}`;
    const asAdmin = async (p: string, status: Obj) => {
      const r = await apiRequest(`${p}/status`, { method: 'PATCH', admin: true, body: { status } });
      if (r.status !== 200) throw new Error(`admin status patch of ${p}: ${r.status} ${r.body}`);
    };
    await asAdmin(at('vmsnapshots', 'mine'), { phase: 'Pending', nodeName: node });
    await asAdmin(at('vmsnapshots', 'theirs'), { phase: 'Pending', nodeName: otherNode, file: { path: '/var/lib/vmsnap/snapshots/theirs' } });
    await asAdmin(at('vmrestores', 'mine'), { phase: 'Pending', nodeName: node });
    await asAdmin(at('vmrestores', 'theirs'), { phase: 'Pending', nodeName: otherNode });
    const asAgent = (p: string, status: Obj) => apiRequest(`${p}/status`, { method: 'PATCH', token: podBoundAgentToken, body: { status } });

    // The policy reaches the admission plugin through an informer: wait until it refuses.
    let refused = { status: 0, body: '' };
    await poll('the agent to be refused another node\'s object', async () => {
      refused = await asAgent(at('vmsnapshots', 'theirs'), { phase: 'Pending' });
      return refused.status === 403;
    }, 30_000);
    expect(refused.body).toContain(`the vmsnap agent on node ${node} may only write the status of work assigned to its node`);
    expect(refused.body).toContain(`vmsnapshots ${work}/theirs is assigned to node ${otherNode}`);

    // Another node's work: neither taken, failed nor faked.
    const foreign = [
      [at('vmsnapshots', 'theirs'), { phase: 'InProgress', nodeName: node }],
      [at('vmsnapshots', 'theirs'), { phase: 'Failed', error: { time: new Date().toISOString(), message: 'forged' } }],
      [at('vmsnapshots', 'theirs'), { phase: 'Succeeded', readyToUse: true, file: { path: '/etc/shadow' } }],
      [at('vmrestores', 'theirs'), { phase: 'Succeeded' }],
      [at('vmsnapshots', 'unassigned'), { phase: 'InProgress', nodeName: node }],
    ] as const;
    for (const [p, status] of foreign) {
      const r = await asAgent(p, status);
      if (r.status !== 403) throw new Error(`agent on ${node} patched ${p} with ${JSON.stringify(status)}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
    }
    expect((await asAgent(at('vmsnapshots', 'unassigned'), { phase: 'InProgress' })).body).toContain('is not assigned to a node');
    const theirs = JSON.parse((await apiRequest(at('vmsnapshots', 'theirs'), { admin: true })).body) as Obj;
    expect(theirs.status).toMatchObject({ phase: 'Pending', nodeName: otherNode, file: { path: '/var/lib/vmsnap/snapshots/theirs' } });
    expect(theirs.status.error).toBeUndefined();

    // Its own node's work: claimed, its file recorded and then sized, finished.
    const mine = at('vmsnapshots', 'mine');
    expect((await asAgent(mine, { phase: 'InProgress', file: { path: '/var/lib/vmsnap/snapshots/mine' } })).status).toBe(200);
    expect((await asAgent(mine, { progress: { bytesDone: 1, bytesTotal: 2, percent: 50 } })).status).toBe(200);
    expect((await asAgent(at('vmrestores', 'mine'), { phase: 'InProgress' })).status).toBe(200);

    // Once set, nodeName and the file stay: not moved to another node, not pointed elsewhere, not dropped.
    const moved = await asAgent(mine, { nodeName: otherNode });
    expect(moved.status).toBe(403);
    expect(moved.body).toContain(`status.nodeName: cannot change once set (it is ${node})`);
    const repointed = await asAgent(mine, { file: { path: '/etc/shadow' } });
    expect(repointed.status).toBe(403);
    expect(repointed.body).toContain('status.file.path: cannot change once set (it is /var/lib/vmsnap/snapshots/mine)');
    expect((await asAgent(mine, { file: null })).status).toBe(403);
    expect((await asAgent(mine, { nodeName: null })).status).toBe(403);
    expect((await asAgent(at('vmrestores', 'mine'), { nodeName: otherNode })).status).toBe(403);

    const done = await asAgent(mine, { phase: 'Succeeded', readyToUse: true, file: { path: '/var/lib/vmsnap/snapshots/mine', logicalBytes: 4096, allocatedBytes: 4096 } });
    expect(done.status).toBe(200);
    const stored = JSON.parse((await apiRequest(mine, { admin: true })).body) as Obj;
    expect(stored.status).toMatchObject({ phase: 'Succeeded', nodeName: node, file: { path: '/var/lib/vmsnap/snapshots/mine', logicalBytes: 4096 } });

    // The operator is not the agent: it still reassigns and rewrites status as it must.
    const byOperator = await apiRequest(`${at('vmsnapshots', 'theirs')}/status`, { method: 'PATCH', token: tokens.operator, body: { status: { nodeName: node } } });
    expect(byOperator.status).toBe(200);
  });
});

describe('scripts/kind-e2e.sh', () => {
  const script = path.join(repoRoot, 'scripts', 'kind-e2e.sh');

  it('is valid bash and uses the chart, the Dockerfile and the examples', async () => {
    const { execFile } = await import('node:child_process');
    const code = await new Promise<number>((resolve) => execFile('bash', ['-n', script], (err) => resolve(err ? 1 : 0)));
    expect(code).toBe(0);
    const text = readFileSync(script, 'utf8');
    for (const needle of ['kind create cluster', 'docker build', 'kind load docker-image', 'helm upgrade --install', 'examples/', 'set -euo pipefail']) {
      expect(text).toContain(needle);
    }
  });
});
