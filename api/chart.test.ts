// Static checks of the Helm chart that need no helm binary: values.yaml against the generated
// values schema, the agent config it renders, and template references to values.
import { loadAllYaml } from '@kubernetes/client-node';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentConfigSchema, operationSlots } from './agent-config.js';
import { AGENT_CAPABILITIES, ChartValuesSchema } from './chart-values.js';
import { formatZodError } from './common.js';

const chartDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../helm/vmsnap');
const values = loadAllYaml(readFileSync(path.join(chartDir, 'values.yaml'), 'utf8'))[0] as Record<string, any>;
// Relative to templates/, subdirectories (tests/) included.
const templates = (readdirSync(path.join(chartDir, 'templates'), { recursive: true }) as string[])
  .filter((f) => statSync(path.join(chartDir, 'templates', f)).isFile())
  .map((f) => [f, readFileSync(path.join(chartDir, 'templates', f), 'utf8')] as const);

describe('helm chart', () => {
  it('values.yaml satisfies the values schema', () => {
    const result = ChartValuesSchema.safeParse(values);
    if (!result.success) throw new Error(formatZodError(result.error));
  });

  it('renders an agent config the agent accepts, with the documented roots', () => {
    const config = AgentConfigSchema.parse({
      vmRoot: values.agent.vmRoot,
      storageRoot: values.agent.storageRoot,
      socketGlobs: values.agent.socketGlobs,
      inventoryIntervalSeconds: values.agent.inventoryIntervalSeconds,
      maxConcurrentOperations: values.agent.maxConcurrentOperations,
      stallTimeoutSeconds: values.agent.stallTimeoutSeconds,
      ...(values.agent.maxOperationsPerNamespace > 0 ? { maxOperationsPerNamespace: values.agent.maxOperationsPerNamespace } : {}),
    });
    expect(config.stallTimeoutSeconds).toBe(60);
    expect(operationSlots(config)).toEqual({ total: 2, perNamespace: 1 });
    expect(config.vmRoot).toBe('/var/lib/vmsnap/vms');
    expect(config.storageRoot).toBe('/var/lib/vmsnap/snapshots');
  });

  it('names the ServiceAccounts vmsnap-operator and vmsnap-agent', () => {
    expect(values.operator.serviceAccount.name).toBe('vmsnap-operator');
    expect(values.agent.serviceAccount.name).toBe('vmsnap-agent');
  });

  it('templates only reference values that exist', () => {
    const missing: string[] = [];
    for (const [file, text] of templates) {
      for (const match of text.matchAll(/\.Values((?:\.[A-Za-z0-9_]+)+)/g)) {
        const keys = match[1]!.slice(1).split('.');
        let node: any = values;
        for (const key of keys) node = node && typeof node === 'object' ? node[key] : undefined;
        if (node === undefined) missing.push(`${file}: .Values${match[1]}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('the agent DaemonSet has what the node work needs', () => {
    const ds = templates.find(([f]) => f === 'agent-daemonset.yaml')![1];
    for (const needle of ['hostPID: true', 'fieldPath: spec.nodeName', 'name: NODE_NAME', 'name: VMSNAP_VM_SOURCE', 'name: VMSNAP_KUBELET_ROOT_DIR', 'mountPropagation: HostToContainer', 'path: /dev/kvm', 'type: CharDevice']) {
      expect(ds).toContain(needle);
    }
    // Not privileged: root with the named capabilities only, under the runtime's seccomp profile.
    expect(values.agent.privileged).toBe(false);
    expect(values.agent.singleTenantHostsAcknowledged).toBe(false);
    expect(values.agent.securityContext).toEqual({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: [...AGENT_CAPABILITIES] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    const readme = readFileSync(path.join(chartDir, 'README.md'), 'utf8');
    for (const cap of AGENT_CAPABILITIES) expect(readme).toContain(`- **\`CAP_${cap}\`.**`);
    expect(values.agent).toMatchObject({ vmSource: 'pods', kubeletRootDir: '/var/lib/kubelet', probes: { enabled: true } });
    expect(values.operator.probes.enabled).toBe(true);
  });

  it('grants leases only in the release namespace', () => {
    const rbac = templates.find(([f]) => f === 'operator-rbac.yaml')![1];
    const leaseRole = rbac.split('---').find((doc) => doc.includes('coordination.k8s.io'))!;
    expect(leaseRole).toContain('kind: Role\n');
    expect(leaseRole).toContain('namespace: {{ .Release.Namespace }}');
  });

  it('lets the agent read only the Secrets repositories name, only in the release namespace', () => {
    const rbac = templates.find(([f]) => f === 'agent-rbac.yaml')![1];
    const docs = rbac.split('\n---\n');
    const clusterRole = docs.find((d) => d.includes('kind: ClusterRole\n'))!;
    expect(clusterRole).not.toContain('secrets');
    const secretRole = docs.find((d) => d.includes('"secrets"'))!;
    expect(secretRole).toContain('kind: Role\n');
    expect(secretRole).toContain('namespace: {{ $.Release.Namespace }}');
    expect(secretRole).toMatch(/resourceNames:\s*\{\{- toYaml \. /);
    expect(secretRole).toContain('verbs: ["get"]');
    expect(values.agent.repositorySecrets).toEqual([]);
  });
});
