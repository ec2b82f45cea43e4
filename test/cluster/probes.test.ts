// The probes the chart points the kubelet at, answered by the real processes against the real API
// server: the agent daemon becomes ready once its watches synced and it published its VMInventory;
// the operator is ready as a standby while the API server answers its lease requests, and not
// ready when it cannot reach the API server.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { startDaemon } from '../../agent/src/daemon/daemon.js';
import { CRD_REVISION, CRD_REVISION_ANNOTATION } from '../../api/common.js';
import { CLUSTER_STARTUP_TIMEOUT_MS, createNamespace, ensureCluster, kubectl, kubectlOk, repoRoot } from '../../stack/controlplane.js';
import { run } from '../../stack/run.js';
import { ensureCrds } from './crds.js';
import { poll } from '../../kit/poll.js';

const RUN_ID = randomBytes(3).toString('hex');

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

async function probe(port: number, p: string): Promise<{ status: number; body: string }> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(2_000) });
    return { status: r.status, body: (await r.text()).trim() };
  } catch (err) {
    return { status: 0, body: String(err) };
  }
}

beforeAll(async () => {
  await ensureCluster();
  await ensureCrds();
}, CLUSTER_STARTUP_TIMEOUT_MS);

describe('agent probes', () => {
  const node = `probe-node-${RUN_ID}`;
  afterAll(async () => {
    await kubectl(['delete', 'vminventory', node, '--ignore-not-found', '--wait=false']);
  });

  it('/readyz turns ready after the watches synced and the first VMInventory publish; /healthz answers throughout', async () => {
    const cp = await ensureCluster();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-probes-'));
    const port = await freePort();
    const env = {
      KUBECONFIG: cp.kubeconfig,
      NODE_NAME: node,
      VMSNAP_VM_SOURCE: 'sockets',
      VMSNAP_VM_ROOT: path.join(dir, 'vms'),
      VMSNAP_STORAGE_ROOT: path.join(dir, 'snapshots'),
      VMSNAP_INVENTORY_INTERVAL_SECONDS: '5',
      VMSNAP_HEALTH_PORT: String(port),
      VMSNAP_HEALTH_HOST: '127.0.0.1',
    };
    fs.mkdirSync(env.VMSNAP_VM_ROOT, { recursive: true });
    const daemon = await startDaemon({ env, log: pino({ level: 'silent' }) });
    try {
      expect(await probe(port, '/healthz')).toEqual({ status: 200, body: 'ok' });
      const ready = await poll('/readyz to answer 200', async () => {
        const r = await probe(port, '/readyz');
        return r.status === 200 && r;
      }, 30_000);
      expect(ready.body).toBe('ok');
      const inventory = JSON.parse(await kubectlOk(['get', 'vminventory', node, '-o', 'json'])) as { status?: { updatedTime?: string } };
      expect(inventory.status?.updatedTime).toBeDefined();
    } finally {
      await daemon.stop('test over');
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // Stopped: nothing listens any more.
    expect((await probe(port, '/healthz')).status).toBe(0);
  });
});

describe('operator probes', () => {
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  const startOperator = (env: Record<string, string>): ChildProcess => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'dist/operator/main.js')], {
      env: { ...process.env, VMSNAP_METRICS_PORT: 'off', VMSNAP_HEALTH_HOST: '127.0.0.1', VMSNAP_LOG_LEVEL: 'warn', ...env },
      stdio: 'ignore',
    });
    children.push(child);
    return child;
  };

  it('a standby (the lease is held elsewhere) is ready while the API server answers, and never reconciles', async () => {
    const cp = await ensureCluster();
    const ns = await createNamespace('probes');
    const leaseName = `held-${RUN_ID}`;
    const now = new Date().toISOString().replace('Z', '000Z');
    const lease = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: leaseName, namespace: ns }, spec: { holderIdentity: 'someone-else', leaseDurationSeconds: 3600, renewTime: now } };
    await kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(lease) });
    const port = await freePort();
    const child = startOperator({ KUBECONFIG: cp.kubeconfig, VMSNAP_LEASE_NAMESPACE: ns, VMSNAP_LEASE_NAME: leaseName, VMSNAP_HEALTH_PORT: String(port), POD_NAME: 'standby' });
    await poll('/readyz of the standby to answer 200', async () => (await probe(port, '/readyz')).status === 200, 30_000);
    expect(await probe(port, '/healthz')).toEqual({ status: 200, body: 'ok' });
    const held = JSON.parse(await kubectlOk(['get', 'lease', leaseName, '-n', ns, '-o', 'json'])) as { spec: { holderIdentity: string } };
    expect(held.spec.holderIdentity).toBe('someone-else');

    // `helm test` runs dist/operator/self-test.js: CRDs current and the operator ready, or exit 1 saying which.
    const selfTest = (url: string) =>
      run(process.execPath, [path.join(repoRoot, 'dist/operator/self-test.js')], { env: { ...process.env, KUBECONFIG: cp.kubeconfig, VMSNAP_READYZ_URL: url } });
    const pass = await selfTest(`http://127.0.0.1:${port}/readyz`);
    expect([pass.code, pass.stdout]).toEqual([0, expect.stringContaining('operator: ready')]);
    expect(pass.stdout).toContain('CRDs: installed, revision current');
    const dead = await freePort();
    const fail = await selfTest(`http://127.0.0.1:${dead}/readyz`);
    expect(fail.code).toBe(1);
    expect(fail.stderr).toContain(`FAIL operator does not answer at http://127.0.0.1:${dead}/readyz`);
    child.kill('SIGTERM');
  });

  it('refuses to start against CRDs older than it, naming the CRD and the upgrade step', async () => {
    const cp = await ensureCluster();
    await ensureCrds();
    const crd = 'vminventories.vmsnap.io';
    // As after `helm upgrade`, which never upgrades crds/: one CRD of an older revision.
    await kubectlOk(['annotate', 'crd', crd, `${CRD_REVISION_ANNOTATION}=${CRD_REVISION - 1}`, '--overwrite']);
    try {
      const child = spawn(process.execPath, [path.join(repoRoot, 'dist/operator/main.js')], {
        env: { ...process.env, KUBECONFIG: cp.kubeconfig, VMSNAP_METRICS_PORT: 'off', VMSNAP_LEADER_ELECTION: 'false' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      let out = '';
      child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(code).toBe(1);
      expect(out).toContain(`refusing to start: CRD ${crd} is revision ${CRD_REVISION - 1}, older than this operator's ${CRD_REVISION}`);
      expect(out).toContain('kubectl apply --server-side -f <chart>/crds/');
    } finally {
      await kubectlOk(['annotate', 'crd', crd, `${CRD_REVISION_ANNOTATION}=${CRD_REVISION}`, '--overwrite']);
    }
  });

  it('is not ready when the API server cannot be reached, and says so', async () => {
    const cp = await ensureCluster();
    // The test cluster's kubeconfig, pointed at a port nothing listens on.
    const dead = await freePort();
    const kubeconfig = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-probes-')), 'kubeconfig');
    fs.writeFileSync(kubeconfig, fs.readFileSync(cp.kubeconfig, 'utf8').replace(/server: https:\/\/[^\s]+/, `server: https://127.0.0.1:${dead}`));
    const port = await freePort();
    startOperator({ KUBECONFIG: kubeconfig, VMSNAP_HEALTH_PORT: String(port), POD_NAME: 'cut-off' });
    await poll('/healthz to answer 200', async () => (await probe(port, '/healthz')).status === 200, 30_000);
    const notReady = await probe(port, '/readyz');
    expect(notReady.status).toBe(503);
    expect(notReady.body).toMatch(/API server has not answered a leader lease request/);
  });
});
