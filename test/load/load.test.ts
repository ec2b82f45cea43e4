// Load: 10 agents (processes with their own node names) with 5 tiny VMs each,
// 100 VMSnapshots applied at once. All must succeed, none may run twice, and
// no agent may run more than its maxConcurrentOperations at a time, nor more
// than one namespace's share (all this work is in one namespace). Reports
// the API requests it took, the operator's peak memory and the time to drain;
// with VMSNAP_RECORD_LOAD=1 it writes them to bench/results/load.json (the
// figures in docs/benchmarks.md), so an ordinary test run leaves the checkout clean.
import fs from 'node:fs';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { apiRequest } from '../cluster/api-request.js';
import { createNamespace, ensureCluster, kubectl, repoRoot } from '../../stack/controlplane.js';
import { startTinyVm, type QemuVm } from '../../kit/qemu.js';
import { startStack, tearDownStack, type Stack } from '../../stack/e2e.js';
import { AgentConfigSchema, operationSlots } from '../../api/index.js';
import { poll } from '../../kit/poll.js';
import { vmSnapshot, yamlDocs } from '../../kit/manifests.js';

const NODES = 10;
const VMS_PER_NODE = 5;
const SNAPSHOTS_PER_VM = 2;
/** The chart's (and the agent's) defaults: the node's slots, and the most one namespace may hold. */
const { total: LIMIT, perNamespace: NAMESPACE_SHARE } = operationSlots(AgentConfigSchema.parse({}));

let stack: Stack;
let ns: string;
const vms: QemuVm[] = [];

beforeAll(async () => {
  stack = await startStack(Array.from({ length: NODES }, (_, i) => `load-${i}`));
  ns = await createNamespace('load');
  const starts: Array<Promise<QemuVm>> = [];
  for (const agent of stack.agents.values()) {
    for (let j = 0; j < VMS_PER_NODE; j++) starts.push(startTinyVm(path.join(agent.vmRoot, ns, `${agent.node}-vm-${j}`)));
  }
  vms.push(...(await Promise.all(starts)));
}, 10 * 60 * 1000);

afterAll(async () => {
  await tearDownStack(stack, vms);
  if (ns) await kubectl(['delete', 'namespace', ns, '--wait=false']);
});

/** Sum of apiserver_request_total by resource (other tests on a shared control plane add to it too). */
async function apiRequests(): Promise<Map<string, number>> {
  const r = await apiRequest('/metrics', { admin: true });
  if (r.status !== 200) throw new Error(`/metrics: HTTP ${r.status}`);
  const byResource = new Map<string, number>();
  for (const m of r.body.matchAll(/^apiserver_request_total\{([^}]*)\} (\S+)$/gm)) {
    const resource = /(?:^|,)resource="([^"]*)"/.exec(m[1]!)?.[1] || '(none)';
    byResource.set(resource, (byResource.get(resource) ?? 0) + Number(m[2]));
  }
  return byResource;
}

function vmHwmBytes(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

interface Tracker {
  /** uid -> how many times it entered InProgress. */
  entered: Map<string, number>;
  /** node -> most objects InProgress at once. */
  peak: Map<string, number>;
  phases: Map<string, string>;
  errors: string[];
  stop(): void;
}

/**
 * Watches the namespace's VMSnapshots; concurrency is computed from the ordered event stream.
 * Starts at resourceVersion 0 (the namespace is new, so nothing is missed): a watch without one
 * asks for a consistent read, which an etcd without progress notifications can time out.
 */
async function track(namespace: string): Promise<Tracker> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile((await ensureCluster()).kubeconfig);
  const t: Tracker = { entered: new Map(), peak: new Map(), phases: new Map(), errors: [], stop: () => undefined };
  const inProgress = new Map<string, string>(); // uid -> node
  let resourceVersion = '0';
  let stopped = false;
  let current: AbortController | undefined;
  type Obj = { metadata: { uid: string; resourceVersion: string }; status?: { phase?: string; nodeName?: string } };
  const onEvent = (type: string, obj: Obj) => {
    if (type === 'ERROR' || !obj.metadata?.uid) {
      t.errors.push(JSON.stringify(obj).slice(0, 300));
      return;
    }
    resourceVersion = obj.metadata.resourceVersion;
    const uid = obj.metadata.uid;
    const phase = type === 'DELETED' ? 'Deleted' : (obj.status?.phase ?? '');
    const before = t.phases.get(uid);
    t.phases.set(uid, phase);
    if (phase === 'InProgress' && before !== 'InProgress') {
      const node = obj.status?.nodeName ?? '?';
      t.entered.set(uid, (t.entered.get(uid) ?? 0) + 1);
      inProgress.set(uid, node);
      const now = [...inProgress.values()].filter((n) => n === node).length;
      t.peak.set(node, Math.max(t.peak.get(node) ?? 0, now));
    } else if (phase !== 'InProgress') {
      inProgress.delete(uid);
    }
  };
  // The server ends watches now and then: resume from the last version seen.
  const start = async (): Promise<void> => {
    current = await new k8s.Watch(kc).watch(
      `/apis/vmsnap.io/v1alpha1/namespaces/${namespace}/vmsnapshots`,
      { resourceVersion, allowWatchBookmarks: false },
      onEvent,
      (err: unknown) => {
        if (err) t.errors.push(String(err));
        if (!stopped) void start();
      },
    );
  };
  await start();
  t.stop = () => {
    stopped = true;
    current?.abort();
  };
  return t;
}

async function inventoriesComplete(): Promise<boolean> {
  for (const agent of stack.agents.values()) {
    const r = await kubectl(['get', 'vminventory', agent.nodeName, '-o', 'jsonpath={.status.vms[*].name}']);
    if (r.code !== 0 || r.stdout.split(' ').filter((n) => n.startsWith(`${agent.node}-vm-`)).length < VMS_PER_NODE) return false;
  }
  return true;
}

it(`${NODES} agents x ${VMS_PER_NODE} VMs, ${NODES * VMS_PER_NODE * SNAPSHOTS_PER_VM} VMSnapshots at once: all succeed once, within the per-node limit and the namespace's share`, async () => {
  await poll('the agents to publish all VMs in their inventories', inventoriesComplete, { timeoutMs: 120_000, intervalMs: 500 });

  const docs: object[] = [];
  for (const agent of stack.agents.values()) {
    for (let j = 0; j < VMS_PER_NODE; j++) {
      for (let k = 0; k < SNAPSHOTS_PER_VM; k++) {
        docs.push(vmSnapshot(`${agent.node}-vm-${j}-s${k}`, { vmName: `${agent.node}-vm-${j}` }));
      }
    }
  }
  const tracker = await track(ns);
  const requestsBefore = await apiRequests();
  const started = Date.now();
  const applied = await kubectl(['apply', '-n', ns, '-f', '-'], { input: yamlDocs(...docs), timeoutMs: 120_000 });
  expect(applied.stderr).toBe('');

  const terminal = () => [...tracker.phases.values()].filter((p) => p === 'Succeeded' || p === 'Failed').length;
  const phases = await poll('every VMSnapshot to finish', () => {
    if (tracker.errors.length > 0) throw new Error(`the watch failed: ${tracker.errors[0]}`);
    return tracker.phases.size === docs.length && terminal() === docs.length && tracker.phases;
  }, { timeoutMs: 8 * 60_000, intervalMs: 100, describe: () => `${terminal()} of ${docs.length} finished` });
  const drainMs = Date.now() - started;
  tracker.stop();
  const requestsAfter = await apiRequests();
  const operatorPeakRss = vmHwmBytes(stack.operator.pid!);
  const agentPeakRss = Math.max(...[...stack.agents.values()].map((a) => vmHwmBytes(a.process.pid!)));

  // All succeeded.
  const list = JSON.parse((await kubectl(['get', 'vmsnapshots', '-n', ns, '-o', 'json'])).stdout) as {
    items: Array<{ metadata: { name: string; uid: string }; spec: { vmName: string }; status: { phase: string; nodeName: string; file: { path: string }; error?: { message: string } } }>;
  };
  const failed = list.items.filter((s) => s.status.phase !== 'Succeeded');
  expect(failed.map((s) => `${s.metadata.name}: ${s.status.phase} ${s.status.error?.message ?? ''}`)).toEqual([]);
  expect(list.items).toHaveLength(docs.length);

  // None ran twice: entered InProgress once (watch), claimed once (agent logs), one file each.
  expect([...tracker.entered.entries()].filter(([, n]) => n !== 1)).toEqual([]);
  expect(tracker.entered.size).toBe(docs.length);
  const claims = new Map<string, number>();
  for (const agent of stack.agents.values()) {
    for (const line of fs.readFileSync(agent.logPath, 'utf8').split('\n')) {
      if (!line.includes('"claimed; running"')) continue;
      const uid = (JSON.parse(line) as { uid: string }).uid;
      claims.set(uid, (claims.get(uid) ?? 0) + 1);
    }
  }
  for (const s of list.items) expect([s.metadata.name, claims.get(s.metadata.uid)]).toEqual([s.metadata.name, 1]);
  const files = [...stack.agents.values()].flatMap((a) => {
    const d = path.join(a.storageRoot, ns);
    return fs.existsSync(d) ? fs.readdirSync(d).filter((f) => f.endsWith('.vms')) : [];
  });
  expect(files).toHaveLength(docs.length);
  for (const s of list.items) {
    // Each VM's snapshots ran on the node that has it.
    expect(s.status.nodeName).toBe(stack.agents.get(s.spec.vmName.replace(/-vm-\d+$/, ''))!.nodeName);
    expect(fs.existsSync(s.status.file.path)).toBe(true);
  }

  // The per-node limit held; the namespace's share, which binds first here, held and was reached
  // (so the test could see it break).
  const peaks = [...stack.agents.values()].map((a) => tracker.peak.get(a.nodeName) ?? 0);
  expect(Math.max(...peaks)).toBeLessThanOrEqual(LIMIT);
  expect(Math.max(...peaks)).toBe(NAMESPACE_SHARE);

  const delta = (r: string) => (requestsAfter.get(r) ?? 0) - (requestsBefore.get(r) ?? 0);
  const totalRequests = [...requestsAfter.keys()].reduce((sum, r) => sum + delta(r), 0);
  const report = {
    date: new Date().toISOString(),
    agents: NODES,
    vms: NODES * VMS_PER_NODE,
    snapshots: docs.length,
    succeeded: list.items.length - failed.length,
    ranTwice: [...tracker.entered.values()].filter((n) => n > 1).length,
    perNodeLimit: LIMIT,
    perNamespaceLimit: NAMESPACE_SHARE,
    peakInProgressPerNode: Math.max(...peaks),
    drainMs,
    apiRequests: {
      total: totalRequests,
      perSnapshot: Math.round((totalRequests / docs.length) * 10) / 10,
      byResource: Object.fromEntries([...requestsAfter.keys()].map((r) => [r, delta(r)]).filter(([, n]) => (n as number) > 0)),
      note: 'apiserver_request_total delta during the run; other clients of a shared control plane add to it',
    },
    operatorPeakRssMiB: Math.round(operatorPeakRss / (1 << 20)),
    agentPeakRssMiB: Math.round(agentPeakRss / (1 << 20)),
  };
  console.log(`load: ${JSON.stringify(report, null, 2)}`);
  if (process.env.VMSNAP_RECORD_LOAD === '1') {
    fs.writeFileSync(path.join(repoRoot, 'bench/results/load.json'), JSON.stringify(report, null, 2) + '\n');
  }
}, 15 * 60 * 1000);
