// `npm run demo`: the embedded default, deployed as users deploy it. Starts the local cluster
// (etcd, kube-apiserver, controller-manager, scheduler and a kubelet on containerd), builds the
// images here and loads them into the node, installs the Helm chart (the operator Deployment and
// the agent DaemonSet run as pods), starts a real S3 server (SeaweedFS, loopback only) as the
// repository of a default VMSnapshotClass, starts the VM pod of examples/vm-pod.yaml, then applies
// examples/vmsnapshot.yaml (live progress; the snapshot is then uploaded to the bucket) and
// examples/vmrestore.yaml, shows the guest alive with its memory intact, and leaves everything
// running. `npm run demo:down` ends it.
import os from 'node:os';
import path from 'node:path';
import { Phase, UploadPhase } from '../api/index.js';
import { poll } from '../kit/poll.js';
import { vmSnapshotClass } from '../kit/manifests.js';

const stateRoot = process.env.VMSNAP_STATE ?? path.join(os.homedir(), '.local/state/vmsnap');
// The demo uses the same cluster as `npm run cluster:up`.
process.env.VMSNAP_TEST_NODE_CLUSTER_STATE ??= path.join(stateRoot, 'cluster');
process.env.VMSNAP_CLUSTER_QUIET ??= '1';

const { repoRoot } = await import('../stack/controlplane.js');
const product = await import('../stack/product.js');
const { qemuPidsOfPod, vmLog } = await import('../stack/vm-pod.js');
const { guestChecks } = await import('../kit/guest.js');
const { ensureNodeCluster, nodeKubectl, nodeKubectlOk } = await import('../stack/node-cluster.js');
const { startSeaweedFS, stopDetachedSeaweedFS } = await import('../stack/seaweedfs.js');

const RELEASE = 'vmsnap';
const RELEASE_NAMESPACE = 'vmsnap-system';
const VM = { namespace: 'default', name: 'demo' };
/** The demo's repository: a SeaweedFS that outlives the demo (demo:down stops it), its Secret and a default class uploading to it. */
const S3 = { dir: path.join(stateRoot, 'k8s-demo', 's3'), bucket: 'demo-snapshots', secret: 'demo-s3', className: 'demo-offsite' };
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const step = (s: string) => console.log(bold(s));

/** Ends what a previous demo left: its snapshot, restore, VM pod and chart release. */
async function teardown(): Promise<void> {
  await nodeKubectl(['delete', 'vmrestore', 'demo-restore', '-n', VM.namespace, '--ignore-not-found', '--wait=false']);
  await nodeKubectl(['delete', 'vmsnapshot', 'demo-snapshot', '-n', VM.namespace, '--ignore-not-found', '--timeout=60s']);
  await nodeKubectl(['patch', 'vmsnapshot', 'demo-snapshot', '-n', VM.namespace, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
  await nodeKubectl(['delete', 'pod', VM.name, '-n', VM.namespace, '--ignore-not-found', '--timeout=60s']);
  await product.nodeHelm(await ensureNodeCluster(), ['uninstall', RELEASE, '-n', RELEASE_NAMESPACE, '--ignore-not-found', '--wait', '--timeout', '2m']);
  await nodeKubectl(['delete', 'vmsnapshotclass', S3.className, '--ignore-not-found']);
  await nodeKubectl(['delete', 'secret', S3.secret, '-n', RELEASE_NAMESPACE, '--ignore-not-found']);
  await stopDetachedSeaweedFS(S3.dir);
}

/** SeaweedFS on loopback (the agent pod shares the node's network), its bucket, the Secret and a default class that uploads every snapshot to it. */
async function startRepository(): Promise<string> {
  const server = await startSeaweedFS({ dir: S3.dir, detached: true });
  await server.createBucket(S3.bucket);
  await nodeKubectlOk(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'v1', kind: 'Secret', metadata: { name: S3.secret, namespace: RELEASE_NAMESPACE }, stringData: { ...server.credentials } },
        vmSnapshotClass(
          { name: S3.className, annotations: { 'vmsnap.io/is-default-class': 'true' } },
          { repository: { endpoint: server.endpoint, bucket: S3.bucket, prefix: 'demo/', credentialsSecret: S3.secret }, deletionPolicy: 'Delete' },
        ),
      ],
    }),
  });
  return server.endpoint;
}

interface Progress {
  bytesDone: number;
  bytesTotal: number;
  /** Set once the work is over: the error message when it failed, or '' when it succeeded. */
  failed?: string;
}

/** Polls an object, drawing the progress `read` finds in it, until `read` says the work is over; returns the object. */
async function followProgress(resource: string, what: string, read: (obj: Record<string, any>) => Progress): Promise<Record<string, any>> {
  const started = Date.now();
  let lastLine = '';
  let last: Progress | undefined;
  const obj = await poll(
    `${resource} to finish ${what}`,
    async () => {
      const o = await getJson(resource);
      last = read(o);
      if (last.bytesTotal) {
        const line = bar(last.bytesDone, last.bytesTotal, last.bytesDone / (1 << 20) / Math.max((Date.now() - started) / 1000, 0.001));
        if (line !== lastLine) process.stdout.write(process.stdout.isTTY ? `\r${line}` : `${line}\n`);
        lastLine = line;
      }
      return last.failed !== undefined && o;
    },
    { timeoutMs: 300_000, intervalMs: 200, describe: () => JSON.stringify(last) },
  );
  if (process.stdout.isTTY && lastLine) process.stdout.write('\n');
  if (last?.failed) throw new Error(`${resource}: ${what} failed: ${last.failed}`);
  return obj;
}

/** Follows status.progress until the object is Succeeded or Failed. */
const follow = (resource: string) =>
  followProgress(resource, 'its work', (o) => {
    const st = o.status ?? {};
    const over = st.phase === Phase.Succeeded || st.phase === Phase.Failed;
    return { bytesDone: st.progress?.bytesDone ?? 0, bytesTotal: st.progress?.bytesTotal ?? 0, failed: over ? (st.phase === Phase.Failed ? (st.error?.message ?? 'no reason recorded') : '') : undefined };
  });

/** Follows the snapshot's status.upload until Uploaded or Failed; returns status.upload. */
async function followUpload(resource: string): Promise<Record<string, any>> {
  const obj = await followProgress(resource, 'its upload', (o) => {
    const up = o.status?.upload ?? {};
    const over = up.phase === UploadPhase.Uploaded || up.phase === UploadPhase.Failed;
    return { bytesDone: up.bytesDone ?? 0, bytesTotal: up.bytesTotal ?? 0, failed: over ? (up.phase === UploadPhase.Failed ? (up.message ?? 'no reason recorded') : '') : undefined };
  });
  return obj.status.upload;
}

function bar(done: number, total: number, mibps: number): string {
  const pct = total > 0 ? (100 * done) / total : 0;
  const filled = Math.round(pct / 5);
  return `   [${'#'.repeat(filled)}${'.'.repeat(20 - filled)}] ${pct.toFixed(0).padStart(3)}%  ${(done / (1 << 20)).toFixed(0)}/${(total / (1 << 20)).toFixed(0)} MiB  ${mibps.toFixed(0)} MiB/s`;
}

async function getJson(resource: string): Promise<Record<string, any>> {
  return JSON.parse(await nodeKubectlOk(['get', resource, '-n', VM.namespace, '-o', 'json']));
}

/** Waits until the guest's serial console (the pod's log) shows `count` passing memory checks. */
async function passes(count: number, timeoutMs: number): Promise<number> {
  let seen = 0;
  const checks = await poll(
    `the guest to pass ${count} memory checks`,
    async () => {
      const c = guestChecks(await vmLog(VM.namespace, VM.name));
      if (c.bad.length) throw new Error(`the guest found damaged memory: ${c.bad[0]}`);
      seen = c.passCount;
      return c.passCount >= count && c;
    },
    { timeoutMs, intervalMs: 250, describe: () => `${seen} passed` },
  );
  return checks.lastPass;
}

async function main(): Promise<void> {
  if (process.argv.includes('--down')) {
    await teardown();
    console.log('demo stopped (the cluster keeps running: npm run cluster:down stops it)');
    return;
  }
  const t0 = Date.now();
  step('1. local cluster: etcd, kube-apiserver, controller-manager, scheduler, a kubelet on containerd + runc');
  const cp = await ensureNodeCluster();
  await teardown();
  console.log(`   API server ${cp.server}; node ${cp.nodeName}`);

  step('2. images built here (operator/agent, VM launcher, demo guest), loaded into the node');
  const images = await product.buildAndLoadImages(cp);
  console.log(`   ${images.vmsnap}, ${images.vm}, ${images.guest}`);

  step(`3. helm install ${RELEASE} helm/vmsnap -n ${RELEASE_NAMESPACE}: the operator and the agent as pods; an S3 server as the snapshots' repository`);
  const base = 20000 + Math.floor(Math.random() * 20000);
  await product.installRelease(cp, images, {
    name: RELEASE,
    namespace: RELEASE_NAMESPACE,
    storageRoot: path.join(stateRoot, 'k8s-demo', 'snapshots'),
    ports: { metrics: base, operatorProbes: base + 1, agentProbes: base + 2 },
    values: { 'agent.repositorySecrets': `{${S3.secret}}` },
  });
  const endpoint = await startRepository();
  console.log(`   S3 repository: SeaweedFS at ${endpoint} (loopback only), bucket ${S3.bucket}; default VMSnapshotClass ${S3.className} uploads every snapshot there`);

  step('4. kubectl apply -f examples/vm-pod.yaml: the VM "demo" is a pod; its init fills memory with a pattern and re-checks it');
  await nodeKubectlOk(['apply', '-f', path.join(repoRoot, 'examples/vm-pod.yaml')]);
  await nodeKubectlOk(['wait', '--for=condition=Ready', `pod/${VM.name}`, '-n', VM.namespace, '--timeout=120s']);
  await passes(1, 180_000);
  const podUid = (await getJson(`pod/${VM.name}`)).metadata.uid as string;
  await poll(
    `the agent to report the demo VM in VMInventory ${cp.nodeName}`,
    async () => (await nodeKubectl(['get', 'vminventory', cp.nodeName, '-o', 'jsonpath={.status.vms[*].name}'])).stdout.split(' ').includes(VM.name),
    { timeoutMs: 60_000, intervalMs: 250 },
  );
  const qemuBefore = qemuPidsOfPod(podUid);
  console.log(`   running (QEMU pid ${qemuBefore.join(',')} on the node); the agent reports it in VMInventory ${cp.nodeName}`);

  step('5. kubectl apply -f examples/vmsnapshot.yaml');
  const tApply = Date.now();
  await nodeKubectlOk(['apply', '-f', path.join(repoRoot, 'examples/vmsnapshot.yaml')]);
  const snap = await follow('vmsnapshot/demo-snapshot');
  const snapWall = Date.now() - tApply;
  console.log(`   Succeeded: ${snap.status.restoreSizeHuman} in ${snap.status.durationHuman} (${snap.status.throughputHuman}) on ${snap.status.nodeName}: ${snap.status.file.path}`);
  console.log(`   uploading in the background (the VM runs on) to bucket ${S3.bucket}:`);
  const upload = await followUpload('vmsnapshot/demo-snapshot');
  console.log(
    `   Uploaded: ${(upload.bytesDone / (1 << 20)).toFixed(0)} MiB of present pages (${(upload.storedBytes / (1 << 20)).toFixed(0)} MiB stored) in ${(upload.durationMs / 1000).toFixed(1)} s to s3://${upload.bucket}/${upload.prefix}`,
  );

  step('6. kubectl apply -f examples/vmrestore.yaml (ifRunning: Replace: the pod\'s launcher restarts QEMU, the agent loads the snapshot into it)');
  const checksBefore = guestChecks(await vmLog(VM.namespace, VM.name));
  const tRestore = Date.now();
  await nodeKubectlOk(['apply', '-f', path.join(repoRoot, 'examples/vmrestore.yaml')]);
  const restore = await follow('vmrestore/demo-restore');
  const restoreWall = Date.now() - tRestore;
  console.log(`   Succeeded in ${restore.status.durationHuman ?? `${restore.status.durationMs} ms`}, VM down for ${restore.status.downtimeHuman ?? `${restore.status.downtimeMs} ms`}`);

  step('7. the guest after the restore (kubectl logs demo)');
  const after = await passes(checksBefore.passCount + 2, 60_000);
  const fill = /vmsnap\.fill_mib=(\d+)/.exec(JSON.stringify((await getJson(`pod/${VM.name}`)).spec.containers[0].args))?.[1];
  console.log(`   last memory check before the restore: pass ${checksBefore.lastPass}; after: pass ${after} ok: ${fill} MiB intact, the guest runs on`);
  console.log(`   same pod (uid ${podUid}), QEMU pid ${qemuBefore.join(',')} -> ${qemuPidsOfPod(podUid).join(',')}`);

  step('\nkubectl get pods -A');
  console.log((await nodeKubectlOk(['get', 'pods', '-A', '-o', 'wide'])).trimEnd());

  step('\nsummary');
  console.log(`   kubectl apply -> Succeeded: snapshot ${snapWall} ms (engine ${snap.status.durationMs} ms, VM paused ${snap.status.vmPausedMs} ms), restore ${restoreWall} ms; upload ${upload.durationMs} ms`);
  console.log(`   whole demo ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  console.log('The stack keeps running. Try:');
  console.log('   kubectl get vmss,vmsr -A              # snapshots and restores');
  console.log('   kubectl describe vmss demo-snapshot   # the story in events (the upload too)');
  console.log('   kubectl get vminventories -o wide     # what the agent sees');
  console.log('   kubectl logs -f demo                  # the guest checking its memory');
  console.log(`   kubectl delete pod -n ${RELEASE_NAMESPACE} -l app.kubernetes.io/component=agent   # the VM keeps running`);
  console.log('Tear it down: npm run demo:down (and npm run cluster:down for the cluster)');
  console.log(`export PATH=${path.dirname(cp.kubectl)}:$PATH`);
  console.log(`export KUBECONFIG=${cp.kubeconfig}`);
}

try {
  await main();
  process.exit(0);
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
}
