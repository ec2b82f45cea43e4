// The control plane (etcd and kube-apiserver, no node) that the cluster and e2e suites and the
// bench run against: started (or reused) through cluster/up.sh, driven with its kubectl and helm.
//
// Its instance is its own (state dir `<VMSNAP_STATE>/cluster-test`, or
// $VMSNAP_TEST_CLUSTER_STATE), never a developer's `npm run cluster:up` cluster.
// The instance is left running between test runs (a warm `up` is ~0.2 s); stop it with
//   VMSNAP_CLUSTER_STATE=~/.local/state/vmsnap/cluster-test npm run cluster:down
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { run, type RunResult } from './run.js';

export interface ControlPlane {
  kubeconfig: string;
  kubectl: string;
  helm: string;
  server: string;
  binDir: string;
  stateDir: string;
  caFile: string;
  serviceAccountIssuer: string;
  kubernetesVersion: string;
  apiserver: { pid: number; binary: string; log: string };
  etcd: { pid: number; binary: string; endpoint: string; dataDir: string; log: string };
}

// From the package root, so it holds from the sources and from dist/ (the demo) alike.
export const repoRoot = packageRoot();

/** The first `up` may build kube-apiserver from source: allow this much for a beforeAll. */
export const CLUSTER_STARTUP_TIMEOUT_MS = 30 * 60 * 1000;

/** Where the local instances keep their state: $VMSNAP_STATE, or ~/.local/state/vmsnap. */
export function stateRoot(): string {
  return process.env.VMSNAP_STATE ?? path.join(os.homedir(), '.local', 'state', 'vmsnap');
}

/** `name` under the state root, unless `explicit` (an environment variable's value) names the directory. */
export function instanceDir(name: string, explicit: string | undefined): string {
  return explicit || path.join(stateRoot(), name);
}

export function testClusterStateDir(): string {
  return instanceDir('cluster-test', process.env.VMSNAP_TEST_CLUSTER_STATE);
}

/**
 * Runs cluster/up.sh for the test instance. Exposed for tests of up.sh itself.
 * The instance runs without a node (API server only, seconds to start) unless
 * VMSNAP_TEST_CLUSTER_NODE=1; stack/node-cluster.ts has the instance with a node.
 */
export function runClusterUp(): Promise<RunResult> {
  return clusterUp(testClusterStateDir(), process.env.VMSNAP_TEST_CLUSTER_NODE === '1');
}

/** cluster/up.sh for the instance in `stateDir`, with or without its node. */
export function clusterUp(stateDir: string, node: boolean): Promise<RunResult> {
  return run('bash', [path.join(repoRoot, 'cluster', 'up.sh')], {
    env: { ...process.env, VMSNAP_CLUSTER_STATE: stateDir, VMSNAP_CLUSTER_NODE: node ? '1' : '0' },
    // A cold first run builds the Kubernetes binaries for many minutes: show its progress.
    forwardStderr: process.env.VMSNAP_CLUSTER_QUIET !== '1',
  });
}

export function readClusterJson(stateDir = testClusterStateDir()): ControlPlane {
  return JSON.parse(readFileSync(path.join(stateDir, 'cluster.json'), 'utf8')) as ControlPlane;
}

/**
 * Runs `up` (a cluster/up.sh invocation) at most once per process while it succeeds, then reads
 * the instance's cluster.json with `read`; a failure is not cached, so a later call retries.
 */
export function upOnce<T>(up: () => Promise<RunResult>, read: () => T): () => Promise<T> {
  let started: Promise<T> | undefined;
  return () => {
    if (!started) {
      const starting = (async () => {
        const r = await up();
        const lines = r.stdout.trimEnd().split('\n');
        if (r.code !== 0 || !lines.at(-1)?.startsWith('export KUBECONFIG=')) {
          throw new Error(`cluster/up.sh failed (exit ${r.code}):\n${r.stderr.slice(-4000)}`);
        }
        return read();
      })();
      started = starting;
      starting.catch(() => {
        if (started === starting) started = undefined;
      });
    }
    return started;
  };
}

/** Starts the test control plane once per test file (idempotent across files and runs). */
export const ensureCluster: () => Promise<ControlPlane> = upOnce(runClusterUp, () => readClusterJson());

export interface KubectlOptions {
  /** stdin, e.g. a manifest for `apply -f -`. */
  input?: string;
  /** Authenticate with this bearer token instead of the admin client certificate. */
  token?: string;
  /** Use this kubeconfig instead of the admin one. */
  kubeconfig?: string;
  timeoutMs?: number;
}

/** Runs the cluster's kubectl; never throws on a non-zero exit (inspect `code`). */
export async function kubectl(args: readonly string[], opts: KubectlOptions = {}): Promise<RunResult> {
  const cp = await ensureCluster();
  return kubectlWith(cp.kubectl, opts.kubeconfig ?? (opts.token ? tokenKubeconfig(cp, opts.token) : cp.kubeconfig), args, opts);
}

/** Like kubectl() but throws with stderr when the command fails; returns stdout. */
export async function kubectlOk(args: readonly string[], opts: KubectlOptions = {}): Promise<string> {
  return stdoutOf(await kubectl(args, opts), `kubectl ${args.join(' ')}`);
}

/**
 * Runs a kubectl binary with exactly this kubeconfig; KUBECONFIG is overridden too, so a
 * developer's ~/.kube/config can never leak in. Never throws on a non-zero exit.
 */
export function kubectlWith(binary: string, kubeconfig: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(binary, ['--kubeconfig', kubeconfig, ...args], { env: { ...process.env, KUBECONFIG: kubeconfig }, input: opts.input, timeoutMs: opts.timeoutMs ?? 60_000 });
}

/** The stdout of a command that must succeed; otherwise an error naming `what`, its exit code and stderr. */
export function stdoutOf(r: RunResult, what: string): string {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Token kubeconfigs older than this are removed (test tokens are requested for at most an hour). */
const TOKEN_KUBECONFIG_MAX_AGE_MS = 2 * 60 * 60 * 1000;
let tokenDirPruned = false;

/**
 * Writes a kubeconfig that authenticates only with `token` (no client certificate), e.g. for
 * running the operator or agent as a ServiceAccount. Returns its path.
 *
 * The files hold bearer tokens, so they live in the instance's private state directory (0700),
 * one per token, and stale ones are pruned instead of piling up in /tmp.
 */
export function tokenKubeconfig(cp: ControlPlane, token: string, user = 'token-user'): string {
  const tokenDir = path.join(cp.stateDir, 'token-kubeconfigs');
  mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
  if (!tokenDirPruned) {
    tokenDirPruned = true;
    for (const name of readdirSync(tokenDir)) {
      const file = path.join(tokenDir, name);
      try {
        if (Date.now() - statSync(file).mtimeMs > TOKEN_KUBECONFIG_MAX_AGE_MS) rmSync(file, { force: true });
      } catch {
        // removed concurrently by another test process
      }
    }
  }
  const id = createHash('sha256').update(`${cp.server}\0${user}\0${token}`).digest('hex').slice(0, 32);
  const file = path.join(tokenDir, `${id}.kubeconfig`);
  // Never rewritten in place: a concurrent kubectl may be reading it.
  if (existsSync(file)) return file;
  const ca = readFileSync(cp.caFile).toString('base64');
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(
    tmp,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: vmsnap-local',
      '  cluster:',
      `    server: ${cp.server}`,
      `    certificate-authority-data: ${ca}`,
      'users:',
      `- name: ${user}`,
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: vmsnap-local',
      '  context:',
      '    cluster: vmsnap-local',
      `    user: ${user}`,
      'current-context: vmsnap-local',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  renameSync(tmp, file);
  return file;
}

/** Creates a namespace with a unique name (no controller-manager runs: deleted namespaces stay Terminating, so never reuse names). */
export async function createNamespace(prefix = 'test'): Promise<string> {
  const name = `${prefix}-${randomBytes(4).toString('hex')}`;
  await kubectlOk(['create', 'namespace', name]);
  return name;
}

/** Runs the cluster's helm against the test control plane; never throws on a non-zero exit. */
export async function helm(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  const cp = await ensureCluster();
  // Helm's own config, cache and data live with the test instance: no developer repos or plugins.
  const helmHome = path.join(cp.stateDir, 'helm');
  return run(cp.helm, ['--kubeconfig', cp.kubeconfig, ...args], {
    env: {
      ...process.env,
      KUBECONFIG: cp.kubeconfig,
      HELM_CONFIG_HOME: path.join(helmHome, 'config'),
      HELM_CACHE_HOME: path.join(helmHome, 'cache'),
      HELM_DATA_HOME: path.join(helmHome, 'data'),
    },
    timeoutMs: opts.timeoutMs ?? 120_000,
  });
}
