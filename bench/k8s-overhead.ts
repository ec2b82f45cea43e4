// What Kubernetes adds to a save: from creating a VMSnapshot to seeing it
// Succeeded, against the engine's own save time (status.durationMs), on the
// local control plane with the operator and an agent (the e2e stack), for a
// VM with random RAM.
import fs from 'node:fs';
import path from 'node:path';
import { Kube } from '../kube/client.js';
import { startStack } from '../stack/e2e.js';
import { poll } from '../kit/poll.js';
import { fillRandom, startBenchVm } from './qemu-vm.js';
import * as k8s from '@kubernetes/client-node';
import { PhaseWatch } from './phase-watch.js';
import { vmSnapshot } from '../kit/manifests.js';

export interface OverheadRow {
  sizeGiB: number;
  /** Medians over the runs. */
  wallMs: number;
  engineMs: number;
  /** The median of each run's own wall - engine (not the difference of two medians from different runs). */
  overheadMs: number;
  overheadMsRuns: number[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Waits until the node's inventory lists the VM run by this QEMU, so no run is charged for discovery. */
async function reported(kube: Kube, node: string, vmName: string, pid: number): Promise<void> {
  await poll(`the agent on ${node} to report VM ${vmName} (QEMU pid ${pid})`, async () => {
    const inv = await kube.get<{ metadata: object; status?: { vms?: Array<{ name: string; pid?: number }> } }>('vmInventory', { name: node });
    return inv?.status?.vms?.some((v) => v.name === vmName && v.pid === pid);
  }, { timeoutMs: 30_000, intervalMs: 100 });
}

export async function measureK8sOverhead(opts: { sizeGiB: number; reps: number; log: (l: string) => void }): Promise<OverheadRow> {
  const stack = await startStack(['bench-node']);
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(stack.cp.kubeconfig);
  const kube = new Kube(kc);
  const ns = 'default';
  const vmName = `bench-${Date.now().toString(36)}`;
  const dir = path.join(stack.agents.get('bench-node')!.vmRoot, ns, vmName);
  fs.mkdirSync(dir, { recursive: true });
  const memFile = path.join('/dev/shm', `vmsnap-k8s-bench-${process.pid}.ram`);
  const walls: number[] = [];
  const snapshots = await PhaseWatch.start(kube, 'vmSnapshot');
  const engines: number[] = [];
  let vm: Awaited<ReturnType<typeof startBenchVm>> | undefined;
  try {
    fillRandom(memFile, opts.sizeGiB * 2 ** 30);
    // name 'qmp' puts the socket at <vmRoot>/<ns>/<vm>/qmp.sock, where the agent looks.
    vm = await startBenchVm({ dir, name: 'qmp', ramBytes: opts.sizeGiB * 2 ** 30, memFile });
    await reported(kube, stack.agents.get('bench-node')!.nodeName, vmName, vm.process.pid!);
    for (let i = 0; i < opts.reps; i++) {
      if (i > 0) {
        // A VM that never ran stays 'postmigrate' after a save: start a fresh one on the same socket.
        await vm.stop();
        vm = await startBenchVm({ dir, name: 'qmp', ramBytes: opts.sizeGiB * 2 ** 30, memFile });
        // Else the operator may see the inventory between the two QEMUs, without the VM, and fail the save.
        await reported(kube, stack.agents.get('bench-node')!.nodeName, vmName, vm.process.pid!);
      }
      const name = `${vmName}-${i}`;
      const started = performance.now();
      await kube.create('vmSnapshot', vmSnapshot({ name, namespace: ns }, { vmName, directIO: 'Always', parallelism: { channels: 4 } }) as never);
      const s = await snapshots.until(ns, name);
      walls.push(performance.now() - started);
      engines.push(s.durationMs ?? 0);
      opts.log(`  k8s run ${i + 1}: apply -> Succeeded ${Math.round(walls.at(-1)!)} ms, engine ${engines.at(-1)} ms, overhead ${Math.round(walls.at(-1)! - engines.at(-1)!)} ms`);
      await kube.custom.deleteNamespacedCustomObject({ group: 'vmsnap.io', version: 'v1alpha1', namespace: ns, plural: 'vmsnapshots', name });
    }
  } finally {
    await snapshots.stop();
    await vm?.stop();
    fs.rmSync(memFile, { force: true });
    await stack.stop();
    fs.rmSync(stack.workDir, { recursive: true, force: true });
  }
  const overheads = walls.map((w, i) => Math.round(w - engines[i]!)).sort((a, b) => a - b);
  return { sizeGiB: opts.sizeGiB, wallMs: Math.round(median(walls)), engineMs: median(engines), overheadMs: median(overheads), overheadMsRuns: overheads };
}
