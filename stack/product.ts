// vmsnap as users deploy it, on the node cluster: the images built here and loaded into the node's
// containerd, and `helm install` of helm/vmsnap (the operator Deployment and the agent DaemonSet
// run as pods under their ServiceAccounts). VM pods are stack/vm-pod.ts.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './controlplane.js';
import { nodeKubectl, nodeKubectlOk, type NodeCluster } from './node-cluster.js';
import { run, type RunResult } from './run.js';

export interface VmsnapImages {
  /** The operator and agent image (Dockerfile target runtime). */
  vmsnap: string;
  /** QEMU under the launcher (target vm). */
  vm: string;
  /** The vm image plus the memory-verifying test guest under /guest. */
  guest: string;
}

/** Builds the images (cached by content) and loads them into the node's containerd. */
export async function buildAndLoadImages(cp: NodeCluster): Promise<VmsnapImages> {
  const built = await run('bash', [path.join(repoRoot, 'cluster/images/build.sh')], {
    env: process.env,
    forwardStderr: process.env.VMSNAP_CLUSTER_QUIET !== '1',
  });
  if (built.code !== 0) throw new Error(`cluster/images/build.sh failed (exit ${built.code}):\n${built.stderr.slice(-4000)}`);
  const lines = built.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/) as [string, string]);
  const named = (prefix: string) => {
    const hit = lines.find(([name]) => name.startsWith(prefix));
    if (!hit) throw new Error(`cluster/images/build.sh printed no ${prefix} image:\n${built.stdout}`);
    return hit;
  };
  const images = { vmsnap: named('localhost/vmsnap/vmsnap:'), vm: named('localhost/vmsnap/vm:'), guest: named('localhost/vmsnap/vm-guest:') };
  const loaded = await run('bash', [path.join(repoRoot, 'cluster/images.sh'), 'load', images.vmsnap[1], images.vm[1], images.guest[1]], {
    env: { ...process.env, VMSNAP_CLUSTER_STATE: cp.stateDir },
  });
  if (loaded.code !== 0) throw new Error(`loading the images into the node failed:\n${loaded.stderr.slice(-4000)}`);
  return { vmsnap: images.vmsnap[0], vm: images.vm[0], guest: images.guest[0] };
}

/** Runs the instance's helm as its admin. */
export async function nodeHelm(cp: NodeCluster, args: readonly string[], timeoutMs = 300_000): Promise<RunResult> {
  return run(cp.helm, ['--kubeconfig', cp.kubeconfig, ...args], { env: { ...process.env, KUBECONFIG: cp.kubeconfig }, timeoutMs });
}

export interface Release {
  name: string;
  namespace: string;
  storageRoot: string;
  /** The chart values this release was installed with (`--set` pairs). */
  values: Record<string, string>;
}

/**
 * The chart values for the local node: the local image, host networking, the API server on
 * loopback (no kube-proxy runs, so the `kubernetes` Service address must never be dialled), VMs
 * found as pods under the kubelet's pod directory, ports nothing else on this machine uses.
 */
export function localNodeValues(cp: NodeCluster, image: string, storageRoot: string, ports: { metrics: number; operatorProbes: number; agentProbes: number }): Record<string, string> {
  const [repository, tag] = image.split(/:(?=[^:]+$)/) as [string, string];
  const server = new URL(cp.server);
  return {
    'image.repository': repository,
    'image.tag': tag,
    'image.pullPolicy': 'Never',
    'apiServer.host': server.hostname,
    'apiServer.port': server.port,
    'operator.hostNetwork': 'true',
    'operator.metricsPort': String(ports.metrics),
    'operator.probes.port': String(ports.operatorProbes),
    'agent.hostNetwork': 'true',
    'agent.probes.port': String(ports.agentProbes),
    'agent.vmSource': 'pods',
    'agent.kubeletRootDir': cp.kubeletRootDir,
    'agent.storageRoot': storageRoot,
    'agent.inventoryIntervalSeconds': '5',
    'agent.terminationGracePeriodSeconds': '30',
  };
}

const setArgs = (values: Record<string, string>) => Object.entries(values).flatMap(([k, v]) => ['--set', `${k}=${v}`]);

/** Installs the chart into a namespace labelled for Pod Security `privileged` (the agent needs it) and waits for both components to be Ready. */
export async function installRelease(
  cp: NodeCluster,
  images: VmsnapImages,
  opts: { name?: string; namespace?: string; storageRoot: string; ports: { metrics: number; operatorProbes: number; agentProbes: number }; values?: Record<string, string> },
): Promise<Release> {
  const name = opts.name ?? `vmsnap-${randomBytes(3).toString('hex')}`;
  const namespace = opts.namespace ?? name;
  fs.mkdirSync(opts.storageRoot, { recursive: true });
  await nodeKubectlOk(['apply', '--server-side', '--force-conflicts', '-f', path.join(repoRoot, 'crds')]);
  await nodeKubectlOk(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '--all']);
  await ensureNamespace(namespace, 'privileged');
  const values = { ...localNodeValues(cp, images.vmsnap, opts.storageRoot, opts.ports), ...opts.values };
  const r = await nodeHelm(cp, ['upgrade', '--install', name, path.join(repoRoot, 'helm/vmsnap'), '-n', namespace, '--skip-crds', '--wait', '--timeout', '5m', ...setArgs(values)]);
  if (r.code !== 0) throw new Error(`helm install failed: ${r.stderr}\n${await describeRelease(namespace)}`);
  return { name, namespace, storageRoot: opts.storageRoot, values };
}

/** helm upgrade with changed values (the rest as installed); waits for the rollout. */
export async function upgradeRelease(cp: NodeCluster, release: Release, changed: Record<string, string>): Promise<void> {
  release.values = { ...release.values, ...changed };
  const r = await nodeHelm(cp, ['upgrade', release.name, path.join(repoRoot, 'helm/vmsnap'), '-n', release.namespace, '--skip-crds', '--wait', '--timeout', '5m', ...setArgs(release.values)]);
  if (r.code !== 0) throw new Error(`helm upgrade failed: ${r.stderr}\n${await describeRelease(release.namespace)}`);
}

export async function uninstallRelease(cp: NodeCluster, release: Release): Promise<void> {
  await nodeHelm(cp, ['uninstall', release.name, '-n', release.namespace, '--wait', '--timeout', '2m']);
}

/** Pods, events and the last log lines of a namespace: what a failed install needs to be understood. */
export async function describeRelease(namespace: string): Promise<string> {
  const pods = await nodeKubectl(['get', 'pods', '-n', namespace, '-o', 'wide']);
  const events = await nodeKubectl(['get', 'events', '-n', namespace, '--sort-by=.lastTimestamp']);
  const logs = await nodeKubectl(['logs', '-n', namespace, '--all-containers', '--prefix', '--tail=30', '-l', 'app.kubernetes.io/name=vmsnap']);
  return [pods.stdout, events.stdout, logs.stdout, logs.stderr].join('\n');
}

/** Creates the namespace (or keeps it) with the Pod Security level enforced. */
export async function ensureNamespace(namespace: string, level: 'privileged' | 'baseline' | 'restricted'): Promise<void> {
  await nodeKubectlOk(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: namespace, labels: { 'pod-security.kubernetes.io/enforce': level } },
    }),
  });
}

