// Fault injection: kill -9 the agent, the operator, QEMU, the API server or etcd
// at random moments of saves and restores, start it again, and check that
// nothing was lost (see invariants.ts); a failed operation, retried, succeeds.
// The plan comes from a seed (printed; replay with VMSNAP_CHAOS_SEED, more runs
// with VMSNAP_CHAOS_RUNS). The API server and etcd are a private instance.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QmpClient } from '../../agent/src/qmp/client.js';
import { createNamespace, kubectl, kubectlOk } from '../../stack/controlplane.js';
import { apply, getJson, waitFor } from '../e2e/objects.js';
import { startStack, type Stack } from '../../stack/e2e.js';
import { startGuest } from '../../kit/guest.js';
import { sleep } from '../../kit/poll.js';
import { killControlPlane, restartControlPlane, stopPrivateControlPlane, usePrivateControlPlane } from './control-plane.js';
import { checkInvariants, listWork, qemuPidsFor, snapshotFilesUnder, vmStatus } from './invariants.js';
import { describeRun, planRuns, type Op, type Run, type Victim } from './plan.js';
import { vmSnapshot, vmRestore } from '../../kit/manifests.js';

const controlPlaneDir = usePrivateControlPlane('cluster-chaos');
const SEED = Number(process.env.VMSNAP_CHAOS_SEED ?? 20260606);
const RUNS = Number(process.env.VMSNAP_CHAOS_RUNS ?? 20);
const plan = planRuns(SEED, RUNS);
const NODE = 'node-a';
const VM = 'chaos-vm';
/** A short deadline, so that a save nobody finishes is failed by the operator within the test. */
const SAVE_DEADLINE_S = 45;
/** VMRestore has no failureDeadline (10m): recovery must end it far sooner than that. */
const RESTORE_SETTLE_MS = 150_000;

interface RunRecord {
  run: string;
  op: Op;
  victim: Victim;
  /** Restarts of the operator after it gave up its lease (by design, see supervise). */
  restarts: string[];
  /** Where the kill landed: before the agent claimed the work, during it, or after it had finished. */
  landed: string;
  outcome: string;
  retry?: string;
  violations: string[];
}

let stack: Stack;
let ns: string;
const records: RunRecord[] = [];
const goodSnapshots: string[] = [];

const agent = () => stack.agents.get(NODE)!;
const vmDir = () => path.join(agent().vmRoot, ns, VM);
const scope = () => ({ namespace: ns, vmRoot: agent().vmRoot, storageRoot: agent().storageRoot });
const terminal = (p: string) => p === 'Succeeded' || p === 'Failed';

async function startVm(): Promise<void> {
  for (const pid of qemuPidsFor(vmDir())) process.kill(pid, 'SIGKILL');
  const dir = vmDir();
  const g = await startGuest({
    dir,
    name: VM,
    memMiB: 128,
    fillMiB: 48,
    seed: 7,
    // A second monitor lets the test watch migrations while the agent holds the first.
    extraArgs: ['-qmp', `unix:${path.join(dir, 'test-monitor.sock')},server=on,wait=off`],
  });
  await g.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
}

async function ensureVmRunning(): Promise<void> {
  if ((await vmStatus(path.join(vmDir(), 'qmp.sock'))) !== 'running') await startVm();
}

function snapshotOf(name: string, op: Op) {
  return vmSnapshot(name, {
    vmName: VM,
    captureMode: op === 'save-live-resume' ? 'Live' : 'Paused',
    afterSnapshot: op === 'save-paused-stop' ? 'Stop' : 'Resume',
    failureDeadline: `${SAVE_DEADLINE_S}s`,
    parallelism: { channels: 2 },
  });
}

/** Applies the operation's object; returns its `kubectl` resource name. */
async function start(op: Op, name: string): Promise<string> {
  if (op === 'restore') {
    await apply(vmRestore(name, { snapshotName: goodSnapshots.at(-1)!, ifRunning: 'Replace' }), ns);
    return `vmrestore/${name}`;
  }
  await apply(snapshotOf(name, op), ns);
  return `vmsnapshot/${name}`;
}

/** Polls an object's phase in the background (the last value survives an API server outage). */
function watchPhase(resource: string): { last: () => string; stop: () => void } {
  let last = 'Applied';
  let stopped = false;
  void (async () => {
    while (!stopped) {
      const r = await kubectl(['get', resource, '-n', ns, '-o', 'jsonpath={.status.phase}'], { timeoutMs: 5000 });
      if (r.code === 0 && r.stdout) last = r.stdout;
      await sleep(100);
    }
  })();
  return { last: () => last, stop: () => (stopped = true) };
}

/** Waits for the run's moment, or until the object is already finished (the kill then lands after it). */
async function awaitMoment(run: Run, phase: () => string): Promise<void> {
  const m = run.moment;
  const until = Date.now() + 60_000;
  if (m.kind === 'delay') return sleep(m.ms);
  if (m.kind === 'inProgress') {
    while (phase() !== 'InProgress' && !terminal(phase()) && Date.now() < until) await sleep(20);
    return sleep(m.extraMs);
  }
  const monitorPath = path.join(vmDir(), 'test-monitor.sock');
  while (!terminal(phase()) && Date.now() < until) {
    let client: QmpClient | undefined;
    try {
      client = await QmpClient.connect(monitorPath, { timeoutMs: 1000 });
      while (!terminal(phase()) && Date.now() < until) {
        const info = await client.execute<{ status?: string; ram?: { total: number; remaining: number } }>('query-migrate', {}, { timeoutMs: 1000 });
        if (info.status === 'active') {
          if (run.op === 'restore' || !info.ram) return;
          if (info.ram.total > 0 && (100 * (info.ram.total - info.ram.remaining)) / info.ram.total >= m.percent) return;
        }
        await sleep(3);
      }
    } catch {
      await sleep(20); // no QEMU there yet (a restore's), or it went away: look again
    } finally {
      client?.close();
    }
  }
}

async function kill(victim: Victim): Promise<void> {
  holding = victim;
  switch (victim) {
    case 'agent':
      return stack.killAgent(NODE, 'SIGKILL');
    case 'operator':
      return stack.killOperator('SIGKILL');
    case 'qemu': {
      const pids = qemuPidsFor(vmDir());
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      const until = Date.now() + 10_000;
      while (qemuPidsFor(vmDir()).length > 0 && Date.now() < until) await sleep(20);
      return;
    }
    case 'apiserver':
    case 'etcd':
      killControlPlane(victim);
  }
}

async function revive(victim: Victim): Promise<void> {
  if (victim === 'agent') await stack.startAgent(NODE);
  if (victim === 'operator') stack.restartOperator();
  if (victim === 'apiserver' || victim === 'etcd') await restartControlPlane();
  // QEMU stays down: a retried save starts the VM again.
  holding = undefined;
}

/** The victim the test keeps down between its kill and its restart. */
let holding: Victim | undefined;
/** What the supervisor saw since the run began: restarts as a Deployment/DaemonSet would do them, and crashes. */
let restarts: string[] = [];
let crashes: string[] = [];
let supervisor: NodeJS.Timeout | undefined;

const ended = (p: ChildProcess) => p.exitCode !== null || p.signalCode !== null;

/**
 * Plays the kubelet: an operator or agent that exits on its own is started again. An operator
 * that lost its lease during an API server outage exits by design (so that only one acts); any
 * other exit is a crash, and a violation.
 */
function supervise(): void {
  supervisor = setInterval(() => {
    if (holding !== 'operator' && ended(stack.operator)) {
      const tail = fs.readFileSync(path.join(stack.workDir, 'operator.log'), 'utf8').slice(-2000);
      const why = `the operator exited (${stack.operator.exitCode ?? stack.operator.signalCode})`;
      if (tail.includes('lost the leader lease')) restarts.push(`${why} after losing its lease; restarted`);
      else crashes.push(why);
      stack.restartOperator();
    }
    if (holding !== 'agent' && ended(agent().process)) {
      crashes.push(`the agent exited (${agent().process.exitCode ?? agent().process.signalCode})`);
      void stack.startAgent(NODE);
    }
  }, 500);
}

/** Waits for the invariants to hold (agents finish clean-ups after a Failed status); returns what still fails. */
async function settle(timeoutMs = 30_000): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const violations = [...crashes, ...(await checkInvariants(scope()))];
    if (violations.length === 0 || Date.now() > until) return violations;
    await sleep(1000);
  }
}

/** Places the kill against the object's own claim and completion times. */
async function landed(resource: string, at: number): Promise<string> {
  const status = (await getJson(resource, ns)).status ?? {};
  const claimed = Date.parse(status.startTime ?? '');
  const completed = Date.parse(status.completionTime ?? '');
  if (!(at >= claimed)) return 'before the claim';
  return at < completed ? 'during the operation' : 'after it finished';
}

/** Waits for a terminal phase; a violation if it takes longer than the object's deadline allows. */
async function finish(resource: string, op: Op): Promise<{ phase: string; message?: string; violation?: string }> {
  const limit = op === 'restore' ? RESTORE_SETTLE_MS : (SAVE_DEADLINE_S + 45) * 1000;
  try {
    await waitFor(resource, ns, '{.status.phase}', terminal, limit);
  } catch (err) {
    return { phase: 'stuck', violation: `${resource} not finished ${limit / 1000} s after the fault: ${(err as Error).message}` };
  }
  const obj = await getJson(resource, ns);
  if (obj.status.phase === 'Succeeded' && resource.startsWith('vmsnapshot/')) goodSnapshots.push(obj.metadata.name);
  return { phase: obj.status.phase, message: obj.status.error?.message };
}

beforeAll(async () => {
  console.log(`chaos: seed ${SEED}, ${RUNS} runs (replay with VMSNAP_CHAOS_SEED=${SEED}); control plane ${controlPlaneDir}`);
  stack = await startStack([NODE]);
  ns = await createNamespace('chaos');
  supervise();
  await startVm();
  const base = await start('save-paused-resume', 'baseline');
  const done = await finish(base, 'save-paused-resume');
  if (done.phase !== 'Succeeded') throw new Error(`the baseline save ended ${done.phase}: ${done.message}`);
}, 30 * 60 * 1000);

afterAll(async () => {
  clearInterval(supervisor);
  console.log(report());
  const reportPath = path.join(process.env.VMSNAP_TEST_DIR ?? os.tmpdir(), 'vmsnap-chaos-report.json');
  fs.writeFileSync(reportPath, JSON.stringify({ seed: SEED, runs: records }, null, 2));
  await stack?.stop();
  stopPrivateControlPlane(controlPlaneDir);
  if (process.env.VMSNAP_KEEP_E2E) console.log(`logs kept in ${stack?.workDir}`);
  else if (stack) fs.rmSync(stack.workDir, { recursive: true, force: true });
}, 5 * 60 * 1000);

describe(`kill -9 during saves and restores (seed ${SEED})`, () => {
  for (const run of plan) {
    it(describeRun(run), async () => {
      restarts = [];
      crashes = [];
      const name = `r${String(run.index + 1).padStart(2, '0')}-${run.op === 'restore' ? 'restore' : 'save'}`;
      if (run.op !== 'restore') await ensureVmRunning();
      const resource = await start(run.op, name);
      const phase = watchPhase(resource);
      let killedAt: number;
      try {
        await awaitMoment(run, phase.last);
        killedAt = Date.now();
        await kill(run.victim);
      } finally {
        phase.stop();
      }
      await sleep(run.downMs);
      await revive(run.victim);

      const done = await finish(resource, run.op);
      const violations = done.violation ? [done.violation] : [];
      violations.push(...(await settle()));
      const record: RunRecord = { run: describeRun(run), op: run.op, victim: run.victim, landed: await landed(resource, killedAt), outcome: done.phase, restarts, violations };
      records.push(record);

      if (done.phase !== 'Succeeded') {
        // The same operation again: it must succeed (a killed VM is started again first).
        if (run.op !== 'restore') await ensureVmRunning();
        const again = await start(run.op, `${name}-retry`);
        const retried = await finish(again, run.op);
        record.retry = retried.phase;
        if (retried.phase !== 'Succeeded') violations.push(`the retry ${again} ended ${retried.phase}: ${retried.message ?? retried.violation}`);
        violations.push(...(await settle()));
      }
      expect(violations).toEqual([]);
    }, 10 * 60 * 1000);
  }

  it('after every object is deleted, no snapshot file is left on the node', async () => {
    await kubectlOk(['delete', 'vmrestores', '--all', '-n', ns, '--wait=true', '--timeout=120s']);
    // Hibernations never woken hold their VM's only state: discarding them is an explicit decision.
    await kubectlOk(['annotate', 'vmsnapshots', '--all', '-n', ns, '--overwrite', 'vmsnap.io/allow-discard-hibernation=true']);
    await kubectlOk(['delete', 'vmsnapshots', '--all', '-n', ns, '--wait=true', '--timeout=120s']);
    expect(await listWork(ns)).toEqual([]);
    expect(snapshotFilesUnder(agent().storageRoot)).toEqual([]);
  }, 5 * 60 * 1000);
});

function report(): string {
  const byVictim = new Map<string, { runs: number; during: number; clean: number }>();
  for (const r of records) {
    const v = byVictim.get(r.victim) ?? { runs: 0, during: 0, clean: 0 };
    v.runs += 1;
    if (r.landed === 'during the operation') v.during += 1;
    if (r.violations.length === 0) v.clean += 1;
    byVictim.set(r.victim, v);
  }
  const lines = [
    `chaos seed ${SEED}: ${records.length} runs, ${records.filter((r) => r.violations.length === 0).length} without a violation, ` +
      `${records.filter((r) => r.retry).length} retried, ${records.reduce((n, r) => n + r.restarts.length, 0)} operator restarts after a lost lease`,
    ...[...byVictim].map(([victim, v]) => `  ${victim.padEnd(9)} ${v.runs} runs (${v.during} killed during the operation), ${v.clean} without a violation`),
    ...records.map((r) => `  ${r.run} | ${r.landed} | ${r.outcome}${r.retry ? `, retry ${r.retry}` : ''}${r.restarts.length ? ` | ${r.restarts.join('; ')}` : ''}${r.violations.length ? ` | ${r.violations.join('; ')}` : ''}`),
  ];
  return lines.join('\n');
}
