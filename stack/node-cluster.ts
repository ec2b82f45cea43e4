// The node cluster: a control plane with its node (kubelet, containerd, scheduler,
// controller-manager), started (or reused) through cluster/up.sh, for the node suite, the VM-pod
// bench and the demo.
//
// Its own instance (state dir `<VMSNAP_STATE>/cluster-node`, or $VMSNAP_TEST_NODE_CLUSTER_STATE),
// separate from the node-less `cluster-test` of stack/controlplane.ts. Left running between runs (a
// warm `up` takes seconds); stop it with
//   VMSNAP_CLUSTER_STATE=~/.local/state/vmsnap/cluster-node npm run cluster:down
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { clusterUp, instanceDir, kubectlWith, repoRoot, stdoutOf, upOnce, type ControlPlane } from './controlplane.js';
import { run, type RunResult } from './run.js';

export interface NodeInfo {
  name: string;
  kubeletRootDir: string;
  containerdSocket: string;
  cgroupRoot: string;
  podSubnet: string;
  podBridge: string;
  serviceCIDR: string;
  /** The node's InternalIP: an address on the loopback interface. */
  nodeIP: string;
  sandboxImage: string;
  kubelet: { pid: number; port: number; log: string };
  containerd: { pid: number; config: string; log: string };
  scheduler: { pid: number; log: string };
  controllerManager: { pid: number; log: string };
}

export interface NodeCluster extends ControlPlane {
  serviceClusterIPRange: string;
  nodeName: string;
  containerdSocket: string;
  kubeletRootDir: string;
  /** How to put an image on the node: `<load> <oci-archive>`, then use it with `pullPolicy`. */
  images: { load: string; containerdNamespace: string; snapshotter: string; sandboxImage: string; pullPolicy: string };
  node: NodeInfo;
}

export function nodeClusterStateDir(): string {
  return instanceDir('cluster-node', process.env.VMSNAP_TEST_NODE_CLUSTER_STATE);
}

/** Runs cluster/up.sh for the node instance (or another instance with a node, by state dir). */
export function runNodeClusterUp(stateDir = nodeClusterStateDir()): Promise<RunResult> {
  return clusterUp(stateDir, true);
}

/** Runs cluster/down.sh for an instance. */
export function runClusterDown(stateDir: string): Promise<RunResult> {
  return run('bash', [path.join(repoRoot, 'cluster', 'down.sh')], { env: { ...process.env, VMSNAP_CLUSTER_STATE: stateDir } });
}

export function readNodeClusterJson(stateDir = nodeClusterStateDir()): NodeCluster {
  return JSON.parse(readFileSync(path.join(stateDir, 'cluster.json'), 'utf8')) as NodeCluster;
}

/** Starts the node instance once per test file (idempotent across files and runs). */
export const ensureNodeCluster: () => Promise<NodeCluster> = upOnce(() => runNodeClusterUp(), () => {
  const cp = readNodeClusterJson();
  if (!cp.node) throw new Error(`${nodeClusterStateDir()}/cluster.json has no node`);
  return cp;
});

/** Runs the node instance's kubectl as its admin; never throws on a non-zero exit. */
export async function nodeKubectl(args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const cp = await ensureNodeCluster();
  return kubectlWith(cp.kubectl, cp.kubeconfig, args, opts);
}

/** Like nodeKubectl() but throws with stderr on failure; returns stdout. */
export async function nodeKubectlOk(args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  return stdoutOf(await nodeKubectl(args, opts), `kubectl ${args.join(' ')}`);
}

/** Every pid of the stack's daemons, for checks on their sockets. */
export function stackPids(cp: NodeCluster): Record<string, number> {
  return {
    'kube-apiserver': cp.apiserver.pid,
    etcd: cp.etcd.pid,
    kubelet: cp.node.kubelet.pid,
    containerd: cp.node.containerd.pid,
    'kube-scheduler': cp.node.scheduler.pid,
    'kube-controller-manager': cp.node.controllerManager.pid,
  };
}
