// A private control plane for the fault suite: killing the API server or etcd
// must not disturb the other test files, which share `cluster-test`. cluster/up.sh
// keeps one instance per state directory (own ports, own tmpfs etcd data), and it
// restarts whatever of etcd and kube-apiserver is dead, on the same ports.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { readClusterJson, repoRoot, runClusterUp, stateRoot } from '../../stack/controlplane.js';

/** Call before anything touches the cluster (jest gives every test file its own process.env). */
export function usePrivateControlPlane(name: string): string {
  const dir = path.join(stateRoot(), name);
  process.env.VMSNAP_TEST_CLUSTER_STATE = dir;
  return dir;
}

/** kill -9 of the recorded process, checked to still run the recorded binary (never a recycled pid). */
export function killControlPlane(which: 'apiserver' | 'etcd'): number {
  const cp = readClusterJson();
  const { pid, binary } = cp[which];
  const exe = fs.readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
  if (exe !== fs.realpathSync(binary)) throw new Error(`pid ${pid} runs ${exe}, not ${binary}`);
  process.kill(pid, 'SIGKILL');
  return pid;
}

/** Starts what is dead again; the server URL must not change (the operator's and agents' kubeconfigs name it). */
export async function restartControlPlane(): Promise<void> {
  const before = readClusterJson().server;
  const up = await runClusterUp();
  if (up.code !== 0) throw new Error(`cluster/up.sh failed (exit ${up.code}):\n${up.stderr.slice(-3000)}`);
  const after = readClusterJson().server;
  if (after !== before) throw new Error(`the API server came back on ${after}, not ${before}`);
}

/** Stops the private instance (never the shared one: `dir` is ours). */
export function stopPrivateControlPlane(dir: string): void {
  spawnSync('bash', [path.join(repoRoot, 'cluster', 'down.sh')], { env: { ...process.env, VMSNAP_CLUSTER_STATE: dir }, stdio: 'ignore' });
}
