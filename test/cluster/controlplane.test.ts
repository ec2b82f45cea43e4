// The local control plane is a real API server: RBAC enforced, ServiceAccount tokens issued
// through TokenRequest, and `up` is idempotent.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { CLUSTER_STARTUP_TIMEOUT_MS, type ControlPlane, createNamespace, ensureCluster, kubectl, kubectlOk, readClusterJson, runClusterUp } from '../../stack/controlplane.js';
import { apiRequest } from './api-request.js';
import { poll } from '../../kit/poll.js';

const execFileAsync = promisify(execFile);

let cp: ControlPlane;

beforeAll(async () => {
  cp = await ensureCluster();
}, CLUSTER_STARTUP_TIMEOUT_MS);

describe('local control plane', () => {
  it('answers kubectl version and lists the bootstrap namespaces', async () => {
    const version = JSON.parse(await kubectlOk(['version', '-o', 'json'])) as {
      serverVersion?: { gitVersion?: string };
    };
    expect(version.serverVersion?.gitVersion).toBe(cp.kubernetesVersion);

    const names = (await kubectlOk(['get', 'namespaces', '-o', 'name'])).trim().split('\n');
    expect(names).toEqual(expect.arrayContaining(['namespace/default', 'namespace/kube-system']));
  }, 60_000);

  it('issues ServiceAccount tokens that RBAC refuses until a RoleBinding allows them', async () => {
    const ns = await createNamespace('rbac');
    await kubectlOk(['-n', ns, 'create', 'serviceaccount', 'reader']);

    const token = (await kubectlOk(['-n', ns, 'create', 'token', 'reader', '--duration=10m'])).trim();
    expect(token.split('.')).toHaveLength(3); // a JWT

    const who = JSON.parse(await kubectlOk(['auth', 'whoami', '-o', 'json'], { token })) as {
      status?: { userInfo?: { username?: string } };
    };
    expect(who.status?.userInfo?.username).toBe(`system:serviceaccount:${ns}:reader`);

    const configmaps = `/api/v1/namespaces/${ns}/configmaps`;
    const denied = await apiRequest(configmaps, { token });
    expect(denied.status).toBe(403);
    const deniedCli = await kubectl(['-n', ns, 'get', 'configmaps'], { token });
    expect(deniedCli.code).not.toBe(0);
    expect(deniedCli.stderr).toMatch(/Forbidden/);

    // An invalid token is not even authenticated.
    expect((await apiRequest(configmaps, { token: `${token}x` })).status).toBe(401);

    await kubectlOk(['-n', ns, 'create', 'role', 'configmap-reader', '--verb=get,list,watch', '--resource=configmaps']);
    await kubectlOk([
      '-n', ns, 'create', 'rolebinding', 'reader-can-read',
      '--role=configmap-reader', `--serviceaccount=${ns}:reader`,
    ]);

    await poll('the RoleBinding to reach the authorizer', async () => (await apiRequest(configmaps, { token })).status === 200, 15_000);
    expect((await kubectl(['-n', ns, 'get', 'configmaps'], { token })).code).toBe(0);

    // The Role grants reading configmaps in this namespace only.
    expect((await apiRequest(`/api/v1/namespaces/${ns}/secrets`, { token })).status).toBe(403);
    expect((await apiRequest('/api/v1/namespaces/default/configmaps', { token })).status).toBe(403);
    expect((await apiRequest(configmaps, { token, method: 'DELETE' })).status).toBe(403);
  }, 120_000);

  it('reuses the running instance on a second up', async () => {
    const before = readClusterJson();
    const started = Date.now();
    const again = await runClusterUp();
    const elapsedMs = Date.now() - started;

    expect(again.code).toBe(0);
    const lines = again.stdout.trimEnd().split('\n');
    expect(lines.at(-1)).toBe(`export KUBECONFIG=${cp.kubeconfig}`);

    const after = readClusterJson();
    expect(after.apiserver.pid).toBe(before.apiserver.pid);
    expect(after.etcd.pid).toBe(before.etcd.pid);
    expect(after.server).toBe(before.server);
    expect(again.stderr).toMatch(/reusing running control plane/);
    expect(() => process.kill(after.apiserver.pid, 0)).not.toThrow(); // still the same live process
    expect(elapsedMs).toBeLessThan(15_000);
  }, 60_000);

  it('provides a working helm', async () => {
    const { stdout } = await execFileAsync(cp.helm, ['version', '--short']);
    expect(stdout).toMatch(/^v\d+\.\d+\.\d+/);
  });
});
