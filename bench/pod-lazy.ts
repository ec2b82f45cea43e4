// Lazy against eager VMRestore of a VM pod on the real node (kubelet, containerd, the chart's
// operator and agent as pods): a 2 GiB VM pod is saved once, then restored in place, Lazy and
// Eager in turns, each timed from the VMRestore's creation to the watch delivering Succeeded.
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import { Kube } from '../kube/client.js';
import { PhaseWatch } from './phase-watch.js';
import { buildAndLoadImages, ensureNamespace, installRelease, nodeHelm, uninstallRelease } from '../stack/product.js';
import { createVmPod, vmLog } from '../stack/vm-pod.js';
import { ensureNodeCluster, nodeKubectl } from '../stack/node-cluster.js';
import { repoRoot } from '../stack/controlplane.js';
import { guestChecks } from '../kit/guest.js';
import { poll } from '../kit/poll.js';
import { vmRestore, vmSnapshot } from '../kit/manifests.js';

export interface PodLazyRow {
  memGiB: number;
  /** Medians over the runs: VMRestore created -> Succeeded as the watch sees it. */
  lazyMs: number;
  eagerMs: number;
  lazyRuns: number[];
  eagerRuns: number[];
  /** The agent's own status.durationMs (medians). */
  lazyAgentMs: number;
  eagerAgentMs: number;
  /** eager / lazy wall time. */
  eagerOverLazy: number;
  /** Runs that ended Failed (left out of the medians), with the reason. */
  failures: string[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const until = (what: string, probe: () => Promise<boolean>, timeoutMs: number) => poll(what, probe, { timeoutMs, intervalMs: 500 });

export async function measurePodLazy(opts: { memGiB: number; fillMiB: number; reps: number; dir: string; log: (l: string) => void }): Promise<PodLazyRow> {
  const cp = await ensureNodeCluster();
  const images = await buildAndLoadImages(cp);
  const suffix = randomBytes(3).toString('hex');
  const base = 20000 + Math.floor(Math.random() * 20000);
  const storageRoot = path.join(opts.dir, `pod-lazy-${suffix}`, 'snapshots');
  const release = await installRelease(cp, images, { namespace: `vmsnap-bench-${suffix}`, storageRoot, ports: { metrics: base, operatorProbes: base + 1, agentProbes: base + 2 } });
  // VMSNAP_TRACE=1: the agent logs each step of a restore (agent/src/clock.ts), printed at the end.
  const tracing = process.env.VMSNAP_TRACE === '1';
  const ns = `bench-${suffix}`;
  const vm = 'bench';
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(cp.kubeconfig);
  const kube = new Kube(kc);
  const snapshots = await PhaseWatch.start(kube, 'vmSnapshot');
  const restores = await PhaseWatch.start(kube, 'vmRestore');
  const runs = { Lazy: [] as number[], Eager: [] as number[] };
  const agent = { Lazy: [] as number[], Eager: [] as number[] };
  const failures: string[] = [];
  try {
    if (tracing) {
      const r = await nodeHelm(cp, ['upgrade', release.name, path.join(repoRoot, 'helm/vmsnap'), '-n', release.namespace, '--reuse-values', '--wait', '--set', 'agent.extraEnv[0].name=VMSNAP_TRACE', '--set-string', 'agent.extraEnv[0].value=1']);
      if (r.code !== 0) throw new Error(`helm upgrade with VMSNAP_TRACE failed: ${r.stderr}`);
    }
    await ensureNamespace(ns, 'restricted');
    await createVmPod({ namespace: ns, name: vm, image: images.guest, memMiB: opts.memGiB * 1024, fillMiB: opts.fillMiB, seed: 11 });
    await until('the guest to fill and check its memory', async () => guestChecks(await vmLog(ns, vm)).passCount >= 1, 600_000);
    await until(
      'the agent to report the VM pod',
      async () => {
        const inv = await nodeKubectl(['get', 'vminventory', cp.nodeName, '-o', 'json']);
        return inv.code === 0 && ((JSON.parse(inv.stdout).status?.vms ?? []) as any[]).some((v) => v.namespace === ns && v.name === vm && v.state === 'running');
      },
      120_000,
    );
    await kube.create('vmSnapshot', vmSnapshot({ name: 'snap', namespace: ns }, { vmName: vm }) as never);
    const saved = await snapshots.until(ns, 'snap');
    opts.log(`  pod lazy: saved the ${opts.memGiB} GiB VM pod in ${saved.durationMs} ms`);
    for (let i = 0; i < opts.reps; i++) {
      for (const mode of ['Lazy', 'Eager'] as const) {
        const name = `${mode.toLowerCase()}-${i}`;
        const t0 = performance.now();
        const createdAt = Date.now();
        await kube.create('vmRestore', vmRestore({ name, namespace: ns }, { snapshotName: 'snap', ifRunning: 'Replace', restoreMode: mode }) as never);
        const s = await restores.until(ns, name).catch((err: Error) => {
          // Reported, not fatal: the other runs still measure; the VM pod waits for the next restore.
          failures.push(`${name}: ${err.message}`);
          opts.log(`  pod lazy run ${i + 1}: ${mode} FAILED: ${err.message}`);
          return undefined;
        });
        if (!s) continue;
        runs[mode].push(Math.round(performance.now() - t0));
        agent[mode].push(s.durationMs ?? 0);
        // With the trace: the wall clock of both ends, to line up with the agent's, operator's and launcher's lines.
        const at = tracing ? ` [created @${createdAt}, Succeeded seen @${Date.now()}]` : '';
        opts.log(`  pod lazy run ${i + 1}: ${mode} created -> Succeeded ${runs[mode].at(-1)} ms (agent ${s.durationMs} ms)${at}`);
      }
    }
    if (tracing) {
      const agentLog = await nodeKubectl(['logs', '-n', release.namespace, '-l', 'app.kubernetes.io/component=agent', '--tail=-1']);
      const operatorLog = await nodeKubectl(['logs', '-n', release.namespace, '-l', 'app.kubernetes.io/component=operator', '--tail=-1']);
      const launcherLog = await nodeKubectl(['logs', '-n', ns, vm]);
      for (const line of `${agentLog.stdout}\n${operatorLog.stdout}\n${launcherLog.stdout}`.split('\n')) {
        if (/query-migrate answered/.test(line)) continue; // a save's and an eager load's polling
        if (/trace|qemu-(stopping|exited|started|ready)|claimed|finished|VMRestore\//i.test(line)) opts.log(`  trace: ${line.slice(0, 400)}`);
      }
    }
  } finally {
    await snapshots.stop();
    await restores.stop();
    // While the agent still runs: it removes the snapshot file, then the finalizers.
    await nodeKubectl(['delete', 'vmrestores,vmsnapshots', '--all', '-n', ns, '--wait=true', '--timeout=120s']);
    await nodeKubectl(['delete', 'namespace', ns, '--wait=true', '--timeout=120s']);
    await uninstallRelease(cp, release);
    await nodeKubectl(['delete', 'namespace', release.namespace, '--wait=false']);
    fs.rmSync(path.dirname(storageRoot), { recursive: true, force: true });
  }
  const lazyMs = median(runs.Lazy);
  const eagerMs = median(runs.Eager);
  return {
    memGiB: opts.memGiB,
    lazyMs,
    eagerMs,
    lazyRuns: runs.Lazy,
    eagerRuns: runs.Eager,
    lazyAgentMs: median(agent.Lazy),
    eagerAgentMs: median(agent.Eager),
    eagerOverLazy: Math.round((eagerMs / lazyMs) * 100) / 100,
    failures,
  };
}

/** The section as `npm run bench` prints it. */
export async function podLazySection(log: (l: string) => void, dir = process.env.VMSNAP_BENCH_DIR ?? '/var/tmp/vmsnap-bench'): Promise<PodLazyRow> {
  const reps = Math.max(Number(process.env.VMSNAP_BENCH_REPS ?? 3), 3);
  const fillMiB = Number(process.env.VMSNAP_BENCH_POD_LAZY_FILL_MIB ?? 1536);
  log(`lazy VMRestore of a VM pod on the node: 2 GiB guest (${fillMiB} MiB filled), ${reps} runs each, Lazy and Eager in turns`);
  const row = await measurePodLazy({ memGiB: 2, fillMiB, reps, dir, log });
  log(
    `VM pod restore, 2 GiB: Lazy created -> Succeeded ${row.lazyMs} ms, Eager ${row.eagerMs} ms, ` +
      `eager/lazy ${row.eagerOverLazy}x; agent's own time Lazy ${row.lazyAgentMs} ms, Eager ${row.eagerAgentMs} ms` +
      (row.failures.length ? `; ${row.failures.length} run(s) failed` : ''),
  );
  return row;
}
