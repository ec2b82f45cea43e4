// A restore on a second node from the repository, against its parts measured in the same run: the
// download alone (the same object, same code and parallelism, into a scratch file on the same
// filesystem, synced) plus a local restore of the same snapshot on its own node. On the process
// stack (real API server, operator, two agents) with a real SeaweedFS and a real QEMU guest: node A
// saves and uploads; each repetition times the download alone, a VMRestore with spec.nodeName B
// (B's cached copy removed first, so it fetches), the download alone again (its figure is the mean
// of the two), and a VMRestore on A (its file evicted from the page cache first). Times are from
// creating the VMRestore to the watch seeing it Succeeded; each starts once its node's inventory is current.
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as k8s from '@kubernetes/client-node';
import { UploadPhase, snapshotFileName, snapshotObjectPrefix, type Repository } from '../api/index.js';
import { repositoryClient } from '../agent/src/objstore/client.js';
import { downloadSnapshot } from '../agent/src/objstore/download.js';
import { Kube } from '../kube/client.js';
import { createNamespace } from '../stack/controlplane.js';
import { startStack, type Stack } from '../stack/e2e.js';
import { startSeaweedFS } from '../stack/seaweedfs.js';
import { startGuest } from '../kit/guest.js';
import { killQemusUnder } from '../kit/qemu.js';
import { vmRestore, vmSnapshot, vmSnapshotClass } from '../kit/manifests.js';
import { poll, sleep } from '../kit/poll.js';
import { evictFile } from './baselines.js';
import { PhaseWatch } from './phase-watch.js';

const BUCKET = 'bench-restore';
const SECRET = 'bench-s3';

export interface RemoteRestoreBenchResult {
  guestMiB: number;
  filledMiB: number;
  /** Present pages uploaded (what the download carries). */
  dataMiB: number;
  parallelism: number;
  reps: number;
  /** Medians over the repetitions, ms. */
  remoteRestoreMs: number;
  downloadMs: number;
  localRestoreMs: number;
  /** remoteRestoreMs / (downloadMs + localRestoreMs): at most 1 is the goal. */
  remoteVsSum: number;
  /** downloadMs: the mean of the download alone right before and right after B's restore. */
  runs: Array<{ remoteRestoreMs: number; downloadMs: number; downloadBeforeMs: number; downloadAfterMs: number; localRestoreMs: number }>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function runRemoteRestoreBench(opts: { guestMiB: number; parallelism: number; reps: number; log: (l: string) => void }): Promise<RemoteRestoreBenchResult> {
  const { guestMiB, parallelism, reps, log } = opts;
  const filledMiB = guestMiB - Math.max(Math.floor(guestMiB / 4), 128);
  const server = await startSeaweedFS();
  let stack: Stack | undefined;
  const watches: PhaseWatch[] = [];
  try {
    await server.createBucket(BUCKET);
    stack = await startStack(['node-a', 'node-b'], { helmArgs: ['--set', `agent.repositorySecrets={${SECRET}}`] });
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(stack.cp.kubeconfig);
    const kube = new Kube(kc);
    const [snapshots, restores] = [await PhaseWatch.start(kube, 'vmSnapshot'), await PhaseWatch.start(kube, 'vmRestore')];
    watches.push(snapshots, restores);
    const ns = await createNamespace('bench-remote');
    const repository: Repository = { endpoint: server.endpoint, bucket: BUCKET, credentialsSecret: SECRET, parallelism };
    const className = `bench-remote-${Date.now().toString(36)}`;
    await kube.core.createNamespacedSecret({
      namespace: stack.releaseNamespace,
      body: { metadata: { name: SECRET }, stringData: { accessKeyId: server.credentials.accessKeyId, secretAccessKey: server.credentials.secretAccessKey } },
    });
    await kube.create('vmSnapshotClass', vmSnapshotClass(className, { repository }) as never);

    const [a, b] = [stack.agents.get('node-a')!, stack.agents.get('node-b')!];
    const vm = 'remote';
    const dirOn = (node: typeof a) => path.join(node.vmRoot, ns, vm);
    log(`  ${guestMiB} MiB guest on node A: booting and filling ${filledMiB} MiB under TCG, then a VMSnapshot (afterSnapshot Stop) and its upload`);
    const guest = await startGuest({ dir: dirOn(a), name: vm, memMiB: guestMiB, fillMiB: filledMiB, seed: 9 });
    await guest.waitForSerial(/VMSNAP PASS n=1 ok/, 900_000);
    await poll(`node A's agent to report VM ${vm}`, async () => {
      const inv = await kube.get<{ metadata: object; status?: { vms?: Array<{ name: string }> } }>('vmInventory', { name: a.nodeName });
      return inv?.status?.vms?.some((v) => v.name === vm);
    }, { timeoutMs: 30_000, intervalMs: 100 });
    await kube.create('vmSnapshot', vmSnapshot({ name: vm, namespace: ns }, { vmName: vm, className, afterSnapshot: 'Stop' }) as never);
    await snapshots.until(ns, vm);
    await guest.exited;
    const snap = await poll('the snapshot to be uploaded', async () => {
      const s = await kube.get<{ metadata: { uid: string }; status?: Record<string, any> }>('vmSnapshot', { namespace: ns, name: vm });
      if (s?.status?.upload?.phase === UploadPhase.Failed) throw new Error(`the upload failed: ${s.status.upload.message}`);
      return s?.status?.upload?.phase === UploadPhase.Uploaded && { metadata: s.metadata, status: s.status };
    }, { timeoutMs: 600_000, intervalMs: 200 });
    const localFile = snap.status.file.path as string;
    const cached = path.join(b.storageRoot, ns, 'fetched', snapshotFileName(snap as never));
    const source = {
      client: repositoryClient(repository, server.credentials),
      bucket: BUCKET,
      prefix: snapshotObjectPrefix(repository, { namespace: ns, name: vm, uid: snap.metadata.uid }),
      parallelism,
    };
    const scratch = path.join(stack.workDir, 'download-alone.vms');

    // The operator starts a restore only once the node's inventory postdates the VM's last
    // operation on any node; the repetitions follow each other faster than inventories refresh,
    // so each waits for that first, off the clock (a wait of the bench's making, not the restore's).
    let lastFinished = 0;
    const inventoryCaughtUp = (nodeName: string) =>
      poll(`the VMInventory of ${nodeName} to be updated`, async () => {
        const inv = await kube.get<{ metadata: object; status?: { updatedTime?: string } }>('vmInventory', { name: nodeName });
        return Date.parse(inv?.status?.updatedTime ?? '') >= lastFinished;
      }, { timeoutMs: 60_000, intervalMs: 100 });
    const restore = async (name: string, node?: string): Promise<number> => {
      await inventoryCaughtUp(node ?? a.nodeName);
      const t0 = performance.now();
      await kube.create('vmRestore', vmRestore({ name, namespace: ns }, { snapshotName: vm, ...(node ? { nodeName: node } : {}) }) as never);
      await restores.until(ns, name);
      const ms = performance.now() - t0;
      const done = await kube.get<{ metadata: object; status?: { completionTime?: string } }>('vmRestore', { namespace: ns, name });
      lastFinished = Date.parse(done?.status?.completionTime ?? '') || Date.now();
      return ms;
    };
    const downloadAlone = async (): Promise<number> => {
      const t0 = performance.now();
      await downloadSnapshot(source, scratch);
      const ms = performance.now() - t0;
      fs.rmSync(scratch, { force: true });
      return ms;
    };
    const runs: RemoteRestoreBenchResult['runs'] = [];
    for (let rep = 1; rep <= reps; rep++) {
      // The download alone right before and right after node B's restore: the machine's speed
      // drifts from second to second, and the mean of the two brackets B's own download.
      const before = await downloadAlone();
      fs.rmSync(cached, { force: true });
      const remoteRestoreMs = await restore(`on-b-${rep}`, b.nodeName);
      killQemusUnder(dirOn(b));
      const after = await downloadAlone();
      const downloadMs = (before + after) / 2;
      evictFile(localFile);
      const localRestoreMs = await restore(`on-a-${rep}`);
      killQemusUnder(dirOn(a));
      await sleep(500);
      runs.push({
        remoteRestoreMs: Math.round(remoteRestoreMs),
        downloadMs: Math.round(downloadMs),
        downloadBeforeMs: Math.round(before),
        downloadAfterMs: Math.round(after),
        localRestoreMs: Math.round(localRestoreMs),
      });
      log(
        `  rep ${rep}: restore on node B from the repository ${runs.at(-1)!.remoteRestoreMs} ms; download alone ${runs.at(-1)!.downloadMs} ms ` +
          `(${runs.at(-1)!.downloadBeforeMs} before, ${runs.at(-1)!.downloadAfterMs} after) + local restore on A ${runs.at(-1)!.localRestoreMs} ms`,
      );
    }
    // Deleted while the operator and node A run: the file on A and the repository copy go with it.
    await kube.delete('vmSnapshot', { namespace: ns, name: vm, uid: snap.metadata.uid });
    await poll(`VMSnapshot ${vm} to be gone`, async () => !(await kube.get('vmSnapshot', { namespace: ns, name: vm })), { timeoutMs: 60_000, intervalMs: 100 }).catch((err: Error) =>
      log(`  ${err.message} (the measurements stand)`),
    );
    await kube.custom.deleteClusterCustomObject({ group: 'vmsnap.io', version: 'v1alpha1', plural: 'vmsnapshotclasses', name: className });
    const remoteRestoreMs = median(runs.map((r) => r.remoteRestoreMs));
    const downloadMs = median(runs.map((r) => r.downloadMs));
    const localRestoreMs = median(runs.map((r) => r.localRestoreMs));
    return {
      guestMiB,
      filledMiB,
      dataMiB: Math.round((snap.status.upload.bytesDone as number) / (1 << 20)),
      parallelism,
      reps,
      remoteRestoreMs,
      downloadMs,
      localRestoreMs,
      remoteVsSum: Math.round((median(runs.map((r) => r.remoteRestoreMs / (r.downloadMs + r.localRestoreMs))) * 100)) / 100,
      runs,
    };
  } finally {
    await Promise.all(watches.map((w) => w.stop()));
    if (stack) {
      killQemusUnder(stack.workDir);
      await stack.stop();
      if (process.env.VMSNAP_KEEP_E2E) keepLogs(stack.workDir, log);
      fs.rmSync(stack.workDir, { recursive: true, force: true });
    }
    await server.stop();
  }
}

/** VMSNAP_KEEP_E2E: the operator's and agents' logs (their VMSNAP_TRACE lines) copied out before the work directory goes. */
function keepLogs(workDir: string, log: (l: string) => void): void {
  const kept = `${workDir}-logs`;
  fs.mkdirSync(kept, { recursive: true });
  for (const f of fs.readdirSync(workDir).filter((f) => f.endsWith('.log'))) fs.copyFileSync(path.join(workDir, f), path.join(kept, f));
  log(`  logs kept in ${kept}`);
}
