// A tenant of the node cluster: a namespace user with a ServiceAccount token, never the admin, for
// the attacks a VM owner can try.
import fs from 'node:fs';
import path from 'node:path';
import { ensureNamespace } from '../../stack/product.js';
import { nodeKubectlOk, type NodeCluster } from '../../stack/node-cluster.js';
import { kubectlWith, stdoutOf } from '../../stack/controlplane.js';
import type { RunResult } from '../../stack/run.js';

/** kubectl as a namespace user (a ServiceAccount token), never the admin's certificate. */
export interface Tenant {
  namespace: string;
  serviceAccount: string;
  kubeconfig: string;
  kubectl(args: readonly string[], opts?: { input?: string; timeoutMs?: number }): Promise<RunResult>;
  kubectlOk(args: readonly string[], opts?: { input?: string; timeoutMs?: number }): Promise<string>;
}

/**
 * A tenant: a ServiceAccount in `namespace` bound to the built-in `edit` ClusterRole there (what a
 * namespace's developers get; the chart aggregates VMSnapshots and VMRestores into it), and a
 * kubeconfig with its token only, written under `dir`.
 */
export async function createTenant(cp: NodeCluster, namespace: string, dir: string, level: 'privileged' | 'baseline' | 'restricted' = 'restricted'): Promise<Tenant> {
  const serviceAccount = 'tenant';
  await ensureNamespace(namespace, level);
  await nodeKubectlOk(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: serviceAccount, namespace } },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'RoleBinding',
          metadata: { name: `${serviceAccount}-edit`, namespace },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'edit' },
          subjects: [{ kind: 'ServiceAccount', name: serviceAccount, namespace }],
        },
      ],
    }),
  });
  const token = (await nodeKubectlOk(['create', 'token', serviceAccount, '-n', namespace, '--duration=4h'])).trim();
  fs.mkdirSync(dir, { recursive: true });
  const kubeconfig = path.join(dir, `kubeconfig-${namespace}`);
  fs.writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'node', cluster: { server: cp.server, 'certificate-authority': cp.caFile } }],
      users: [{ name: serviceAccount, user: { token } }],
      contexts: [{ name: 'tenant', context: { cluster: 'node', user: serviceAccount, namespace } }],
      'current-context': 'tenant',
    }),
    { mode: 0o600 },
  );
  const kubectl = (args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}) => kubectlWith(cp.kubectl, kubeconfig, args, opts);
  const kubectlOk = async (args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}) =>
    stdoutOf(await kubectl(args, opts), `kubectl (tenant ${namespace}) ${args.join(' ')}`);
  return { namespace, serviceAccount, kubeconfig, kubectl, kubectlOk };
}
