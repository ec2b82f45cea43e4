// The e2e stack: the whole product on the control plane of stack/controlplane.ts, the CRDs and
// the Helm chart installed for real, then the operator and one agent per fake node running as
// processes that authenticate as the chart's ServiceAccounts (tokens from TokenRequest), so the
// chart's RBAC is what they get.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureCluster, helm, kubectl, kubectlOk, repoRoot, tokenKubeconfig, type ControlPlane } from './controlplane.js';
import { killQemusUnder } from '../kit/qemu.js';

export interface AgentProcess {
  /** The name tests use ('node-a'). */
  node: string;
  /** NODE_NAME: unique per stack, so that two runs on one control plane never share a node. */
  nodeName: string;
  vmRoot: string;
  storageRoot: string;
  process: ChildProcess;
  logPath: string;
}

export interface Stack {
  cp: ControlPlane;
  release: string;
  releaseNamespace: string;
  workDir: string;
  agents: Map<string, AgentProcess>;
  /** The current operator process (replaced by restartOperator). */
  readonly operator: ChildProcess;
  operatorKubeconfig: string;
  agentKubeconfig: string;
  startAgent(node: string, opts?: { storageRoot?: string; env?: Record<string, string> }): Promise<AgentProcess>;
  killAgent(node: string, signal?: NodeJS.Signals): Promise<void>;
  killOperator(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the operator again with the same identity (a restarted container keeps its pod name). */
  restartOperator(): ChildProcess;
  stop(): Promise<void>;
}

const OPERATOR = path.join(repoRoot, 'dist/operator/main.js');
const AGENT = path.join(repoRoot, 'dist/agent/src/cli/main.js');

export interface StackOptions {
  /** Run the operator and agents detached, so that they outlive this process (the demo). */
  detached?: boolean;
  /** Where logs, VM roots and snapshots go (default: a new temp dir). */
  workDir?: string;
  /** Extra `helm install` arguments (e.g. `--set agent.repositorySecrets={s3}`). */
  helmArgs?: string[];
  /** Extra environment of the operator process (its VMSNAP_* settings). */
  operatorEnv?: Record<string, string>;
  /** Extra environment of every agent process. */
  agentEnv?: Record<string, string>;
}

function spawnLogged(cmd: string, args: string[], env: NodeJS.ProcessEnv, logPath: string, detached = false): ChildProcess {
  const log = fs.openSync(logPath, 'a');
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', log, log], detached });
  fs.closeSync(log);
  if (detached) child.unref();
  return child;
}

async function token(serviceAccount: string, namespace: string): Promise<string> {
  return (await kubectlOk(['create', 'token', serviceAccount, '-n', namespace, '--duration=6h'])).trim();
}

export async function startStack(nodes: string[], opts: StackOptions = {}): Promise<Stack> {
  const cp = await ensureCluster();
  const crds = await kubectl(['apply', '--server-side', '--force-conflicts', '-f', path.join(repoRoot, 'crds')]);
  if (crds.code !== 0) throw new Error(`applying the CRDs failed: ${crds.stderr}`);
  await kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '--all']);

  const suffix = randomBytes(3).toString('hex');
  const releaseNamespace = `vmsnap-e2e-${suffix}`;
  const release = `vmsnap-${suffix}`;
  const installed = await helm(['install', release, path.join(repoRoot, 'helm/vmsnap'), '-n', releaseNamespace, '--create-namespace', '--skip-crds', ...(opts.helmArgs ?? [])]);
  if (installed.code !== 0) throw new Error(`helm install failed: ${installed.stderr}`);

  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(process.env.VMSNAP_TEST_DIR ?? os.tmpdir(), 'vmsnap-e2e-'));
  fs.mkdirSync(workDir, { recursive: true });
  const operatorKubeconfig = tokenKubeconfig(cp, await token('vmsnap-operator', releaseNamespace), 'vmsnap-operator');
  const agentKubeconfig = tokenKubeconfig(cp, await token('vmsnap-agent', releaseNamespace), 'vmsnap-agent');

  const spawnOperator = () =>
    spawnLogged(
      process.execPath,
      [OPERATOR],
      { KUBECONFIG: operatorKubeconfig, POD_NAMESPACE: releaseNamespace, POD_NAME: `operator-${suffix}`, VMSNAP_METRICS_PORT: '0', VMSNAP_METRICS_HOST: '127.0.0.1', VMSNAP_LOG_LEVEL: 'debug', ...opts.operatorEnv },
      path.join(workDir, 'operator.log'),
      opts.detached,
    );
  let operator = spawnOperator();

  const agents = new Map<string, AgentProcess>();
  const startAgent = async (node: string, agentOpts: { storageRoot?: string; env?: Record<string, string> } = {}): Promise<AgentProcess> => {
    const vmRoot = path.join(workDir, node, 'vms');
    const storageRoot = agentOpts.storageRoot ?? path.join(workDir, node, 'snapshots');
    fs.mkdirSync(vmRoot, { recursive: true });
    fs.mkdirSync(storageRoot, { recursive: true });
    const logPath = path.join(workDir, `agent-${node}.log`);
    const child = spawnLogged(
      process.execPath,
      [AGENT, 'daemon'],
      {
        KUBECONFIG: agentKubeconfig,
        // The chart's namespace, where the agents read repository Secrets.
        POD_NAMESPACE: releaseNamespace,
        NODE_NAME: `${node}-${suffix}`,
        VMSNAP_VM_ROOT: vmRoot,
        VMSNAP_STORAGE_ROOT: storageRoot,
        VMSNAP_INVENTORY_INTERVAL_SECONDS: '5',
        VMSNAP_LOG_LEVEL: 'debug',
        ...opts.agentEnv,
        ...agentOpts.env,
      },
      logPath,
      opts.detached,
    );
    const agent = { node, nodeName: `${node}-${suffix}`, vmRoot, storageRoot, process: child, logPath };
    agents.set(node, agent);
    return agent;
  };
  for (const node of nodes) await startAgent(node);

  const killAgent = async (node: string, signal: NodeJS.Signals = 'SIGKILL') => {
    const a = agents.get(node);
    if (a) await killProcess(a.process, signal);
  };
  const killOperator = (signal: NodeJS.Signals = 'SIGKILL') => killProcess(operator, signal);

  return {
    cp,
    release,
    releaseNamespace,
    workDir,
    agents,
    get operator() {
      return operator;
    },
    operatorKubeconfig,
    agentKubeconfig,
    startAgent,
    killAgent,
    killOperator,
    restartOperator() {
      if (operator.exitCode === null && operator.signalCode === null) throw new Error('the operator is still running');
      operator = spawnOperator();
      return operator;
    },
    async stop() {
      for (const node of agents.keys()) await killAgent(node, 'SIGTERM');
      await killOperator('SIGTERM');
      await helm(['uninstall', release, '-n', releaseNamespace]);
      for (const a of agents.values()) await kubectl(['delete', 'vminventory', a.nodeName, '--ignore-not-found']);
      killQemusUnder(workDir);
    },
  };
}

/** A suite's afterAll: its VMs killed, the stack stopped, and its work directory removed unless VMSNAP_KEEP_E2E is set. */
export async function tearDownStack(stack: Stack | undefined, vms: Array<{ kill(): Promise<unknown> }> = []): Promise<void> {
  await Promise.all(vms.map((v) => v.kill().catch(() => undefined)));
  await stack?.stop();
  if (!stack) return;
  if (process.env.VMSNAP_KEEP_E2E) console.log(`logs kept in ${stack.workDir}`);
  else fs.rmSync(stack.workDir, { recursive: true, force: true });
}

/** Sends `signal` unless the process has already ended, and waits for it to end. */
async function killProcess(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}
