// The local stack's real node: a kubelet on containerd + runc registers and reports Ready, the
// scheduler and controller-manager turn a Deployment (pod network) and a DaemonSet (host network)
// into running pods from the locally built pause image, the API server reaches the kubelet for
// logs and exec, and no socket of the stack (nor a DNS lookup) goes anywhere but this machine.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { CLUSTER_STARTUP_TIMEOUT_MS } from '../../stack/controlplane.js';
import { ensureNodeCluster, nodeKubectl, nodeKubectlOk, stackPids, type NodeCluster } from '../../stack/node-cluster.js';
import { poll } from '../../kit/poll.js';

let cp: NodeCluster;
const ns = `node-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  cp = await ensureNodeCluster();
  await nodeKubectlOk(['create', 'namespace', ns]);
}, CLUSTER_STARTUP_TIMEOUT_MS);

afterAll(async () => {
  if (cp) await nodeKubectl(['delete', 'namespace', ns, '--wait=false']);
});

interface Pod {
  metadata: { name: string; labels?: Record<string, string> };
  spec: { nodeName?: string };
  status: { phase?: string; podIP?: string; hostIP?: string; containerStatuses?: { ready: boolean }[] };
}

async function pods(selector: string): Promise<Pod[]> {
  return (JSON.parse(await nodeKubectlOk(['-n', ns, 'get', 'pods', '-l', selector, '-o', 'json'])) as { items: Pod[] }).items;
}

async function runningPod(selector: string): Promise<Pod> {
  let found: Pod | undefined;
  await poll(`a Running, ready pod of ${selector}`, async () => {
    found = (await pods(selector)).find((p) => p.status.phase === 'Running' && p.status.containerStatuses?.every((c) => c.ready));
    return found !== undefined;
  }, { timeoutMs: 120_000, intervalMs: 500 });
  return found!;
}

/** In the node's pod subnet (cluster.json's node.podSubnet, a /24). */
const inPodSubnet = (ip: string) => ip.startsWith(cp.node.podSubnet.replace(/\.0\/24$/, '.')) && /^\d+\.\d+\.\d+\.\d+$/.test(ip);
const isLoopback = (ip: string) => /^127\./.test(ip) || ip === '::1' || /^::ffff:127\./.test(ip);

function pauseContainer(extra: Record<string, unknown> = {}) {
  return { name: 'pause', image: cp.images.sandboxImage, imagePullPolicy: 'Never', ...extra };
}

test('the node is registered under its name, with a node IP on the loopback interface, and Ready', async () => {
  const node = JSON.parse(await nodeKubectlOk(['get', 'node', cp.nodeName, '-o', 'json'])) as {
    status: { conditions: { type: string; status: string }[]; addresses: { type: string; address: string }[] };
  };
  expect(node.status.conditions.find((c) => c.type === 'Ready')?.status).toBe('True');
  // An address on the loopback interface (the kubelet refuses 127.0.0.0/8 as a node IP).
  expect(node.status.addresses).toContainEqual({ type: 'InternalIP', address: cp.node.nodeIP });
  const lo = spawnSync('ip', ['-o', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' }).stdout;
  expect(lo).toContain(` ${cp.node.nodeIP}/32 `);
});

test('a Deployment gets a Running pod on the pod network, and exec reaches its container', async () => {
  const deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'pause-net', namespace: ns },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: 'pause-net' } },
      template: { metadata: { labels: { app: 'pause-net' } }, spec: { containers: [pauseContainer()] } },
    },
  };
  await nodeKubectlOk(['apply', '-f', '-'], { input: JSON.stringify(deployment) });
  const pod = await runningPod('app=pause-net');
  expect(pod.spec.nodeName).toBe(cp.nodeName);
  expect(inPodSubnet(pod.status.podIP ?? '')).toBe(true);
  // The pause binary prints its version for -v: a second process in the running container,
  // through API server -> kubelet -> containerd's stream server.
  const out = await nodeKubectlOk(['-n', ns, 'exec', pod.metadata.name, '--', '/pause', '-v']);
  expect(out).toMatch(/^pause\.c v/);
});

test('a DaemonSet gets a Running host-network pod on the node', async () => {
  const daemonSet = {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: 'pause-host', namespace: ns },
    spec: {
      selector: { matchLabels: { app: 'pause-host' } },
      template: {
        metadata: { labels: { app: 'pause-host' } },
        spec: { hostNetwork: true, containers: [pauseContainer()] },
      },
    },
  };
  await nodeKubectlOk(['apply', '-f', '-'], { input: JSON.stringify(daemonSet) });
  const pod = await runningPod('app=pause-host');
  expect(pod.spec.nodeName).toBe(cp.nodeName);
  expect(pod.status.podIP).toBe(cp.node.nodeIP);
});

test('kubectl logs reads a container log through the kubelet', async () => {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'prints', namespace: ns },
    spec: { restartPolicy: 'Never', containers: [pauseContainer({ command: ['/pause', '-v'] })] },
  };
  await nodeKubectlOk(['apply', '-f', '-'], { input: JSON.stringify(pod) });
  await poll('pod prints to succeed', async () => {
    const r = await nodeKubectl(['-n', ns, 'get', 'pod', 'prints', '-o', 'jsonpath={.status.phase}']);
    return r.stdout === 'Succeeded';
  }, { timeoutMs: 120_000, intervalMs: 500 });
  const logs = await nodeKubectlOk(['-n', ns, 'logs', 'prints']);
  expect(logs).toMatch(/^pause\.c v\S+\n?$/);
});

test('the kubernetes Service IP is in a reserved range that a local route refuses', async () => {
  expect(cp.serviceClusterIPRange).toBe('198.18.1.0/24');
  const ip = (await nodeKubectlOk(['get', 'service', 'kubernetes', '-n', 'default', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
  expect(ip).toBe('198.18.1.1');
  const route = spawnSync('ip', ['route', 'get', ip], { encoding: 'utf8' });
  expect(`${route.stdout}${route.stderr}`).toMatch(/prohibit|Permission denied|unreachable/i);
});

test('pulling an image that was never loaded fails on the machine, without asking a DNS server', async () => {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'not-loaded', namespace: ns },
    spec: { restartPolicy: 'Never', containers: [{ name: 'c', image: 'not-loaded.invalid/none:1', imagePullPolicy: 'IfNotPresent' }] },
  };
  await nodeKubectlOk(['apply', '-f', '-'], { input: JSON.stringify(pod) });
  let message = '';
  await poll('a Failed event of pod not-loaded', async () => {
    const events = JSON.parse(
      await nodeKubectlOk(['-n', ns, 'get', 'events', '--field-selector', 'involvedObject.name=not-loaded,reason=Failed', '-o', 'json']),
    ) as { items: { message: string }[] };
    message = events.items.map((e) => e.message).find((m) => m.includes('lookup')) ?? '';
    return message !== '';
  }, { timeoutMs: 60_000, intervalMs: 500 });
  // containerd resolves with a resolv.conf that has no servers, so the resolver asks loopback.
  expect(message).toMatch(/lookup not-loaded\.invalid on (\[::1\]|127\.0\.0\.1):53/);
});

test('no TCP or UDP socket of the stack listens or points outside loopback (and the pod bridge)', () => {
  const pids = stackPids(cp);
  const byPid = new Map(Object.entries(pids).map(([name, pid]) => [pid, name]));
  for (const [name, pid] of Object.entries(pids)) expect([name, pid > 0]).toEqual([name, true]);
  // TCP, and UDP (a DNS query is a connected UDP socket while it waits for its answer).
  const ss = spawnSync('ss', ['-tuanpH'], { encoding: 'utf8' });
  expect(ss.status).toBe(0);
  const host = (addrPort: string) => addrPort.replace(/:[^:]*$/, '').replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const offending: string[] = [];
  let seen = 0;
  for (const line of ss.stdout.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 7) continue;
    const [netid, state, , , local, peer] = cols;
    const owners = [...line.matchAll(/pid=(\d+)/g)].map((m) => byPid.get(Number(m[1]))).filter(Boolean);
    if (owners.length === 0) continue;
    seen++;
    const onThisMachine = (ip: string) => isLoopback(ip) || ip === cp.node.nodeIP;
    const unconnectedUdp = netid === 'udp' && /^(\*|0\.0\.0\.0|\[::\]):\*$/.test(peer!);
    const ok =
      state === 'LISTEN' || unconnectedUdp ? onThisMachine(host(local!)) : onThisMachine(host(peer!)) || inPodSubnet(host(peer!));
    if (!ok) offending.push(`${owners.join(',')}: ${line.trim()}`);
  }
  expect(seen).toBeGreaterThan(5); // the check saw the stack (listeners and its connections)
  expect(offending).toEqual([]);
});
