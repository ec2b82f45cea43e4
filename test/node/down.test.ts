// cluster/down.sh on an instance with a node leaves nothing behind: no process, no mount under
// the instance's state, no pod address in the shared pool, no network namespace, no cgroup; and
// the next up brings the node back. A private instance, so the shared `cluster-node` keeps running.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { CLUSTER_STARTUP_TIMEOUT_MS, stateRoot } from '../../stack/controlplane.js';
import { run } from '../../stack/run.js';
import { readNodeClusterJson, runClusterDown, runNodeClusterUp, stackPids, type NodeCluster } from '../../stack/node-cluster.js';
import { poll } from '../../kit/poll.js';

const stateDir = path.join(stateRoot(), 'cluster-node-down');
const POOL = '/var/lib/cni/networks/vmsnap-pods';

async function up(): Promise<NodeCluster> {
  const r = await runNodeClusterUp(stateDir);
  if (r.code !== 0) throw new Error(`cluster/up.sh failed (exit ${r.code}):\n${r.stderr.slice(-4000)}`);
  return readNodeClusterJson(stateDir);
}

async function kubectlOk(cp: NodeCluster, args: string[], input?: string): Promise<string> {
  const r = await run(cp.kubectl, ['--kubeconfig', cp.kubeconfig, ...args], { input, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Pool entries (address files) held by the given sandbox ids. */
function poolEntriesOf(ids: Set<string>): string[] {
  if (!existsSync(POOL)) return [];
  return readdirSync(POOL).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f) && ids.has(readFileSync(path.join(POOL, f), 'utf8').split(/\r?\n/)[0]!));
}

afterAll(async () => {
  await runClusterDown(stateDir);
});

test('down stops the node and cleans up after its pods; up brings it back', async () => {
  const cp = await up();
  const deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'pods', namespace: 'default' },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: 'pods' } },
      template: {
        metadata: { labels: { app: 'pods' } },
        spec: { containers: [{ name: 'pause', image: cp.images.sandboxImage, imagePullPolicy: 'Never' }] },
      },
    },
  };
  await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify(deployment));
  await poll('both pods to run', async () => {
    const phases = await kubectlOk(cp, ['get', 'pods', '-l', 'app=pods', '-o', 'jsonpath={.items[*].status.phase}']);
    return phases.split(' ').filter((p) => p === 'Running').length === 2;
  }, { timeoutMs: 120_000, intervalMs: 500 });
  const ctr = ['--address', cp.containerdSocket, '-n', 'k8s.io'];
  const sandboxes = new Set(
    spawnSync('ctr', [...ctr, 'containers', 'ls', '-q', 'labels."io.cri-containerd.kind"==sandbox'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean),
  );
  expect(poolEntriesOf(sandboxes)).toHaveLength(2);
  const pids = Object.values(stackPids(cp));

  const down = await runClusterDown(stateDir);
  expect(down.code).toBe(0);
  for (const pid of pids) expect([pid, existsSync(`/proc/${pid}`)]).toEqual([pid, false]);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(`${stateDir}/`) || l.includes(` ${stateDir} `));
  expect(mounts).toEqual([]);
  expect(poolEntriesOf(sandboxes)).toEqual([]);
  expect(existsSync(`/sys/fs/cgroup/memory${cp.node.cgroupRoot}`) || existsSync(`/sys/fs/cgroup${cp.node.cgroupRoot}`)).toBe(false);
  const shims = spawnSync('pgrep', ['-f', `containerd-shim.*-address ${cp.containerdSocket}`], { encoding: 'utf8' }).stdout.trim();
  expect(shims).toBe('');

  const again = await up();
  expect(again.nodeName).toBe(cp.nodeName);
  const ready = await kubectlOk(again, ['get', 'node', again.nodeName, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
  expect(ready).toBe('True');
}, CLUSTER_STARTUP_TIMEOUT_MS);
