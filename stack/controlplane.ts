// Helpers for tests that need a real API server: they start (or reuse) the local control plane
// through cluster/up.sh and run the kubectl/helm binaries it provides.
//
// Tests use their own instance (state dir `<VMSNAP_STATE>/cluster-test`, or
// $VMSNAP_TEST_CLUSTER_STATE) so they never touch a developer's `npm run cluster:up` cluster.
// The instance is left running between test runs (a warm `up` is ~0.2 s); stop it with
//   VMSNAP_CLUSTER_STATE=~/.local/state/vmsnap/cluster-test npm run cluster:down
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../agent/src/package-root.js';

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

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

// From the package root, so it holds from the sources and from dist/ (the demo) alike.
export const repoRoot = packageRoot();

/** The first `up` may build kube-apiserver from source: allow this much for a beforeAll. */
export const CLUSTER_STARTUP_TIMEOUT_MS = 30 * 60 * 1000;

export function testClusterStateDir(): string {
  const explicit = process.env.VMSNAP_TEST_CLUSTER_STATE;
  if (explicit) return explicit;
  const stateRoot = process.env.VMSNAP_STATE ?? path.join(os.homedir(), '.local', 'state', 'vmsnap');
  return path.join(stateRoot, 'cluster-test');
}

export function run(
  file: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; forwardStderr?: boolean } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      err.push(b);
      if (opts.forwardStderr) process.stderr.write(b);
    });
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (signal ? `\n(killed by ${signal})` : ''),
        code: code ?? 128,
      });
    });
    // A child that exits without reading its input (a crash, or a killed API server) must not fail the caller with EPIPE: its exit code tells.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * Runs cluster/up.sh for the test instance. Exposed for tests of up.sh itself.
 * The instance runs without a node (API server only, seconds to start) unless
 * VMSNAP_TEST_CLUSTER_NODE=1; test/node/cluster.ts has the instance with a node.
 */
export function runClusterUp(): Promise<RunResult> {
  return run('bash', [path.join(repoRoot, 'cluster', 'up.sh')], {
    env: { ...process.env, VMSNAP_CLUSTER_STATE: testClusterStateDir(), VMSNAP_CLUSTER_NODE: process.env.VMSNAP_TEST_CLUSTER_NODE ?? '0' },
    // A cold first run builds kube-apiserver for many minutes: show its progress.
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
  const kubeconfig = opts.kubeconfig ?? (opts.token ? tokenKubeconfig(cp, opts.token) : cp.kubeconfig);
  // KUBECONFIG is overridden too, so a developer's ~/.kube/config can never leak in.
  return run(cp.kubectl, ['--kubeconfig', kubeconfig, ...args], {
    env: { ...process.env, KUBECONFIG: kubeconfig },
    input: opts.input,
    timeoutMs: opts.timeoutMs ?? 60_000,
  });
}

/** Like kubectl() but throws with stderr when the command fails; returns stdout. */
export async function kubectlOk(args: readonly string[], opts: KubectlOptions = {}): Promise<string> {
  const r = await kubectl(args, opts);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
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

export interface ApiRequestOptions {
  /** Authenticate with this bearer token. */
  token?: string;
  /** Authenticate as the cluster admin (the kubeconfig's client certificate). */
  admin?: boolean;
  method?: string;
  /** Sent as JSON unless it is already a string. */
  body?: unknown;
  /** Defaults to application/json, or application/merge-patch+json for PATCH. */
  contentType?: string;
  /** Resolve as soon as the status line arrives and drop the connection (for watches). */
  headersOnly?: boolean;
}

let adminCredentials: { cert: Buffer; key: Buffer } | undefined;

function adminClientCredentials(cp: ControlPlane): { cert: Buffer; key: Buffer } {
  if (!adminCredentials) {
    const text = readFileSync(cp.kubeconfig, 'utf8');
    const field = (name: string): Buffer => {
      const m = new RegExp(`${name}:\\s*(\\S+)`).exec(text);
      if (!m) throw new Error(`${cp.kubeconfig} has no ${name}`);
      return Buffer.from(m[1]!, 'base64');
    };
    adminCredentials = { cert: field('client-certificate-data'), key: field('client-key-data') };
  }
  return adminCredentials;
}

/**
 * One raw HTTPS request to the API server, for asserting exact status codes. Anonymous unless
 * `token` or `admin` is given.
 */
export async function apiRequest(urlPath: string, opts: ApiRequestOptions = {}): Promise<{ status: number; body: string }> {
  // 429 is "try again" (a new CRD's watch cache still initialising, or flow control), as every
  // client treats it; the answer asserted is the one after it.
  for (let attempt = 1; ; attempt++) {
    const r = await apiRequestOnce(urlPath, opts);
    if (r.status !== 429 || attempt >= 10) return r;
    await new Promise((done) => setTimeout(done, Math.min(5, Number(r.retryAfter) || 1) * 1000));
  }
}

async function apiRequestOnce(urlPath: string, opts: ApiRequestOptions): Promise<{ status: number; body: string; retryAfter?: string }> {
  const cp = await ensureCluster();
  const url = new URL(urlPath, cp.server);
  const ca = readFileSync(cp.caFile);
  const method = opts.method ?? 'GET';
  const payload = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (payload !== undefined) {
    headers['Content-Type'] = opts.contentType ?? (method === 'PATCH' ? 'application/merge-patch+json' : 'application/json');
    headers['Content-Length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method, ca, headers, timeout: 10_000, ...(opts.admin ? adminClientCredentials(cp) : {}) },
      (res) => {
        if (opts.headersOnly) {
          resolve({ status: res.statusCode ?? 0, body: '', retryAfter: res.headers['retry-after'] });
          res.destroy();
          return;
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), retryAfter: res.headers['retry-after'] }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${url.href}`)));
    req.on('error', reject);
    req.end(payload);
  });
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
