// Snapshots leave their node: the operator and two agents (two node names, two storage roots) as
// processes on the real API server, a real SeaweedFS, real QEMU guests. A save on node A is
// uploaded in the background; VMRestores with spec.nodeName B fetch it into B's cache and restore
// it there, eager and lazy, guest memory intact; without spec.nodeName a restore goes where its
// target VM runs (node B), fetched the same way. Then node A is lost (its agent stopped, its
// storage root deleted): an uploaded snapshot still restores on B, and deleting a snapshot of
// the lost node no longer waits for it after the grace period.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { snapshotFileName, type VMRestoreSpecInput } from '../../api/index.js';
import { repositoryClient } from '../../agent/src/objstore/client.js';
import { kubectl, kubectlOk } from '../../stack/controlplane.js';
import { startGuest, type Guest } from '../../kit/guest.js';
import type { S3Server } from '../../stack/seaweedfs.js';
import { startRepositoryStack } from './repository-fixture.js';
import { apply, getJson, waitFor, waitForPhase } from './objects.js';
import { tearDownStack, type Stack } from '../../stack/e2e.js';
import { expectVerifying } from '../../kit/guest.js';
import { killQemusUnder, qemuPidsMentioning } from '../../kit/qemu.js';
import { poll } from '../../kit/poll.js';
import { vmRestore, vmSnapshot, vmSnapshotClass } from '../../kit/manifests.js';

const BUCKET = 'vmsnap-e2e';
const KEY = randomBytes(32);
const GRACE_SECONDS = 20;
let server: S3Server;
let stack: Stack;
let ns: string;
let className: string;
const guests: Guest[] = [];

const agent = (node: string) => stack.agents.get(node)!;
/** A class without repository: its snapshots stay on their node. */
const localClass = () => `${className}-local`;

beforeAll(async () => {
  const repo = await startRepositoryStack({
    bucket: BUCKET,
    prefix: 'e2e-repo',
    secrets: ['e2e-s3', 'e2e-s3-key', 'e2e-s3-wrong'],
    stack: {
      operatorEnv: { VMSNAP_NODE_LOSS_GRACE_SECONDS: String(GRACE_SECONDS) },
      // The probes' listener, which also serves /metrics, on a free loopback port.
      agentEnv: { VMSNAP_HEALTH_PORT: '0', VMSNAP_HEALTH_HOST: '127.0.0.1' },
    },
  });
  ({ server, stack, namespace: ns, className } = repo);
  await apply([
    repo.credentialsSecret('e2e-s3'),
    repo.secret('e2e-s3-key', { key: KEY }),
    repo.credentialsSecret('e2e-s3-wrong', 'wrong' + server.credentials.secretAccessKey),
    vmSnapshotClass(className, {
      deletionPolicy: 'Delete',
      repository: { endpoint: server.endpoint, bucket: BUCKET, prefix: 'e2e/', credentialsSecret: 'e2e-s3', encryptionKeySecret: 'e2e-s3-key', compression: 'Zstd' },
    }),
    vmSnapshotClass(`${className}-wrong-creds`, { deletionPolicy: 'Retain', repository: { endpoint: server.endpoint, bucket: BUCKET, credentialsSecret: 'e2e-s3-wrong' } }),
    vmSnapshotClass(`${className}-no-bucket`, { deletionPolicy: 'Retain', repository: { endpoint: server.endpoint, bucket: 'no-such-bucket-e2e', credentialsSecret: 'e2e-s3' } }),
    vmSnapshotClass(localClass(), { deletionPolicy: 'Delete' }),
  ]);
}, 30 * 60 * 1000);

afterAll(async () => {
  if (stack) {
    // Snapshots of the lost node would wait out the grace period: release them here.
    for (const name of ['app-snap', 'db-snap']) await kubectl(['patch', 'vmsnapshot', name, '-n', ns, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
    for (const c of [className, `${className}-wrong-creds`, `${className}-no-bucket`, localClass()]) await kubectl(['delete', 'vmsnapshotclass', c, '--ignore-not-found']);
  }
  await tearDownStack(stack, guests);
  await server?.stop();
});

/** A guest on `node` that hibernates into a snapshot of the repository class; resolves once it is uploaded. */
async function hibernateUploaded(node: string, vm: string, seed: number): Promise<Record<string, any>> {
  const dir = path.join(agent(node).vmRoot, ns, vm);
  const g = await startGuest({ dir, name: vm, memMiB: 256, fillMiB: 64, seed });
  guests.push(g);
  await g.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
  await apply(vmSnapshot(`${vm}-snap`, { vmName: vm, className, afterSnapshot: 'Stop' }), ns);
  await waitForPhase(`vmsnapshot/${vm}-snap`, ns, 'Succeeded');
  await g.exited;
  await waitFor(`vmsnapshot/${vm}-snap`, ns, '{.status.upload.phase}', (p) => p === 'Uploaded' || p === 'Failed', 180_000);
  return getJson(`vmsnapshot/${vm}-snap`, ns);
}

async function restoreOn(node: string, name: string, snapshot: string, mode: 'Eager' | 'Lazy', extra: Partial<VMRestoreSpecInput> = {}): Promise<Record<string, any>> {
  await apply(vmRestore(name, { snapshotName: snapshot, nodeName: agent(node).nodeName, restoreMode: mode, ...extra }), ns);
  return waitForPhase(`vmrestore/${name}`, ns, 'Succeeded', 300_000);
}

async function objectKeys(prefix: string): Promise<string[]> {
  const client = repositoryClient({ endpoint: server.endpoint }, server.credentials);
  const res = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  return (res.Contents ?? []).map((o) => o.Key!).sort();
}

it('uploads a save of node A and restores it on node B, eager then lazy, memory intact', async () => {
  const snap = await hibernateUploaded('node-a', 'app', 21);
  expect(snap.status.nodeName).toBe(agent('node-a').nodeName);
  expect(snap.status.upload).toMatchObject({ phase: 'Uploaded', bucket: BUCKET, compression: 'Zstd', encrypted: true });
  // Only present pages travel: the 64 MiB pattern and what the kernel touched, far below 256 MiB.
  expect(snap.status.upload.bytesDone).toBeGreaterThanOrEqual(64 << 20);
  expect(snap.status.upload.bytesDone).toBeLessThan(256 << 20);
  expect(snap.status.upload.bytesTotal).toBe(snap.status.upload.bytesDone);
  expect(snap.status.upload.storedBytes).toBeGreaterThan(0);
  expect(snap.status.conditions.find((c: { type: string }) => c.type === 'Uploaded')).toMatchObject({ status: 'True', reason: 'Uploaded' });
  const prefix = `e2e/${ns}/app-snap-${snap.metadata.uid}/`;
  expect(await objectKeys(prefix)).toEqual([`${prefix}data`, `${prefix}manifest.json`]);

  const bDir = path.join(agent('node-b').vmRoot, ns, 'app');
  const serial = path.join(bDir, 'serial.log');
  const cached = path.join(agent('node-b').storageRoot, ns, 'fetched', snapshotFileName(snap as never));

  // A wrong encryption key: refused from the manifest's key check before any part is fetched and
  // before a QEMU is launched on B (no console log, no process, no cached copy).
  await setKey(randomBytes(32));
  await apply(vmRestore('app-wrong-key', { snapshotName: 'app-snap', nodeName: agent('node-b').nodeName }), ns);
  const refused = await waitForPhase('vmrestore/app-wrong-key', ns, 'Failed', 300_000);
  expect(refused.status.error.message).toMatch(/was encrypted with another key: the repository's encryptionKeySecret holds the wrong key/);
  expect(fs.existsSync(serial)).toBe(false);
  expect(qemuPidsMentioning(bDir)).toEqual([]);
  expect(fs.existsSync(cached)).toBe(false);
  expect(fs.existsSync(`${cached}.partial`)).toBe(false);
  await setKey(KEY);

  const eager = await restoreOn('node-b', 'app-on-b', 'app-snap', 'Eager');
  expect(eager.status.nodeName).toBe(agent('node-b').nodeName);
  expect(fs.existsSync(cached)).toBe(true);
  // The VM runs on B from B's own VM directory (its console log is there), its memory intact.
  await expectVerifying(serial, { from: 0 });

  const offset = fs.readFileSync(serial, 'latin1').length;
  const lazy = await restoreOn('node-b', 'app-lazy-on-b', 'app-snap', 'Lazy', { ifRunning: 'Replace' });
  expect(lazy.status).toMatchObject({ restoreMode: 'Lazy', lazy: { file: fs.realpathSync(cached), vmRunning: true } });
  await expectVerifying(serial, { from: offset });
  // The second restore used B's cached copy: one fetch in B's log.
  expect(fs.readFileSync(agent('node-b').logPath, 'utf8')).toMatch(/using the cached copy of the uploaded snapshot/);

  // Both agents' metrics count the transfer; B's shows the lazy VM's resident RAM.
  const up = await agentMetrics('node-a');
  expect(metricValue(up, 'vmsnap_repository_transfer_bytes_total{direction="upload"}')).toBe(snap.status.upload.bytesDone);
  expect(metricValue(up, 'vmsnap_repository_transfer_duration_seconds_count{direction="upload"}')).toBe(1);
  const down = await agentMetrics('node-b');
  expect(metricValue(down, 'vmsnap_repository_transfer_bytes_total{direction="download"}')).toBe(snap.status.upload.bytesDone);
  expect(metricValue(down, 'vmsnap_repository_transfer_duration_seconds_count{direction="download"}')).toBe(1);
  await waitFor('vmrestore/app-lazy-on-b', ns, '{.status.lazy.residentBytes}', (v) => Number(v) >= 64 << 20, 60_000);
  await poll('lazy residency in the metrics of node B', async () => metricValue(await agentMetrics('node-b'), `vmsnap_lazy_resident_bytes{namespace="${ns}",restore="app-lazy-on-b"}`) >= 64 << 20, { timeoutMs: 60_000, intervalMs: 250 });

  // Deleted with node A present: A's agent removes the file, the operator the repository copy;
  // B's cached copy goes too while the lazy VM keeps running on its mapping.
  await kubectlOk(['delete', 'vmsnapshot', 'app-snap', '-n', ns, '--wait=true', '--timeout=120s']);
  expect(await objectKeys(prefix)).toEqual([]);
  expect(fs.existsSync(snap.status.file.path)).toBe(false);
  await poll(`${cached} to leave node B after its VMSnapshot was deleted`, () => !fs.existsSync(cached), { timeoutMs: 60_000, intervalMs: 250 });
  await expectVerifying(serial, { from: fs.readFileSync(serial, 'latin1').length });
  killQemusUnder(bDir);
});

it('a failed upload says why in status.upload, the Uploaded condition and an event; the snapshot itself stays usable', async () => {
  const vm = 'upfail';
  const g = await startGuest({ dir: path.join(agent('node-a').vmRoot, ns, vm), name: vm, memMiB: 128, fillMiB: 16, seed: 5 });
  guests.push(g);
  await g.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
  const cases = [
    { suffix: 'wrong-creds', reason: /the repository refused the credentials \([A-Za-z0-9 ]+\): check the repository's credentialsSecret/ },
    { suffix: 'no-bucket', reason: /checking bucket no-such-bucket-e2e: the bucket does not exist: create it or fix repository.bucket/ },
  ];
  for (const c of cases) {
    const name = `${vm}-${c.suffix}`;
    await apply(vmSnapshot(name, { vmName: vm, className: `${className}-${c.suffix}` }), ns);
    const saved = await waitForPhase(`vmsnapshot/${name}`, ns, 'Succeeded');
    expect(saved.status.readyToUse).toBe(true);
    await waitFor(`vmsnapshot/${name}`, ns, '{.status.upload.phase}', (p) => p === 'Uploaded' || p === 'Failed', 180_000);
    const snap = await getJson(`vmsnapshot/${name}`, ns);
    expect(snap.status.upload.phase).toBe('Failed');
    expect(snap.status.upload.message).toMatch(c.reason);
    expect(snap.status.conditions.find((x: { type: string }) => x.type === 'Uploaded')).toMatchObject({ status: 'False', reason: 'UploadFailed', message: expect.stringMatching(c.reason) });
    const events = await kubectlOk(['get', 'events', '-n', ns, '--field-selector', `reason=UploadFailed,involvedObject.name=${name}`, '-o', 'jsonpath={.items[*].message}']);
    expect(events).toMatch(c.reason);
    // The save is on node A all the same: a restore there does not need the repository.
    expect(snap.status.phase).toBe('Succeeded');
    await kubectlOk(['delete', 'vmsnapshot', name, '-n', ns, '--wait=true', '--timeout=120s']);
  }
  await g.kill();
});

it('restores where the target VM runs without spec.nodeName: fetched onto node B over the VM running there; without a repository it fails naming spec.nodeName', async () => {
  // VM "web" saved on node A twice: once with a class without repository (it keeps running), then
  // hibernated into a snapshot of the repository class and uploaded.
  const vm = 'web';
  const g = await startGuest({ dir: path.join(agent('node-a').vmRoot, ns, vm), name: vm, memMiB: 256, fillMiB: 64, seed: 41 });
  guests.push(g);
  await g.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
  await apply(vmSnapshot('web-local', { vmName: vm, className: localClass() }), ns);
  await waitForPhase('vmsnapshot/web-local', ns, 'Succeeded');
  await apply(vmSnapshot('web-snap', { vmName: vm, className, afterSnapshot: 'Stop' }), ns);
  await waitForPhase('vmsnapshot/web-snap', ns, 'Succeeded');
  await g.exited;
  await waitFor('vmsnapshot/web-snap', ns, '{.status.upload.phase}', (p) => p === 'Uploaded' || p === 'Failed', 180_000);
  const snap = await getJson('vmsnapshot/web-snap', ns);
  expect(snap.status).toMatchObject({ nodeName: agent('node-a').nodeName, upload: { phase: 'Uploaded' } });

  // Another VM "web" (its own memory size and pattern) runs on node B, and B's agent reports it.
  const bDir = path.join(agent('node-b').vmRoot, ns, vm);
  const other = await startGuest({ dir: bDir, name: vm, memMiB: 128, fillMiB: 16, seed: 42 });
  guests.push(other);
  await other.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
  await poll(`node B's inventory to report VM ${vm} running`, async () => {
    const inv = JSON.parse(await kubectlOk(['get', 'vminventory', agent('node-b').nodeName, '-o', 'json']));
    return (inv.status?.vms ?? []).some((v: { namespace: string; name: string; state: string }) => v.namespace === ns && v.name === vm && v.state === 'running');
  }, { timeoutMs: 60_000, intervalMs: 250 });

  const offset = other.serialText().length;
  await apply(vmRestore('web-where', { snapshotName: 'web-snap', ifRunning: 'Replace' }), ns);
  const done = await waitForPhase('vmrestore/web-where', ns, 'Succeeded', 300_000);
  expect(done.status.nodeName).toBe(agent('node-b').nodeName);
  const assigned = await kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'reason=Assigned,involvedObject.name=web-where', '-o', 'jsonpath={.items[*].message}']);
  expect(assigned).toContain(`replacing the running VM) on node ${agent('node-b').nodeName}, where VM "web" runs; fetching VMSnapshot "web-snap" from its repository`);
  // B's agent fetched it into its cache and replaced the VM running there with the snapshot's.
  const cached = path.join(agent('node-b').storageRoot, ns, 'fetched', snapshotFileName(snap as never));
  expect(fs.existsSync(cached)).toBe(true);
  const started = await kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'reason=RestoreStarted,involvedObject.name=web-where', '-o', 'jsonpath={.items[*].message}']);
  expect(started).toContain(`/fetched/${snapshotFileName(snap as never)}) into VM ${ns}/web on node ${agent('node-b').nodeName} `);
  expect(started).toContain('replacing the running VM');
  await other.exited;
  const pids = qemuPidsMentioning(bDir);
  expect(pids).toHaveLength(1);
  const argv = fs.readFileSync(`/proc/${pids[0]}/cmdline`, 'latin1').split('\0');
  expect(argv).toEqual(expect.arrayContaining(['-m', '256']));
  expect(argv.find((a) => a.includes('vmsnap.seed='))).toContain('vmsnap.seed=41');
  // Guest memory intact, on B's console log.
  await expectVerifying(other.serialPath, { from: offset });

  // The snapshot without repository cannot follow the VM to node B: Failed, naming why.
  await apply(vmRestore('web-local-where', { snapshotName: 'web-local', ifRunning: 'Replace' }), ns);
  const refused = await waitForPhase('vmrestore/web-local-where', ns, 'Failed', 60_000);
  expect(refused.status.error.message).toBe(
    `VMSnapshot "web-local" is on node ${agent('node-a').nodeName} and its class has no repository: it cannot be restored on node ${agent('node-b').nodeName}, where VM "web" runs ` +
      `(spec.nodeName is not set, so a restore goes where its target VM runs): stop VM "web" on node ${agent('node-b').nodeName} to restore it on node ${agent('node-a').nodeName}, or restore a copy (spec.targetVMName)`,
  );
  expect(refused.status.nodeName).toBeUndefined();
  // The VM on B was left alone.
  expect(qemuPidsMentioning(bDir)).toEqual(pids);
  await expectVerifying(other.serialPath, { from: other.serialText().length });

  killQemusUnder(bDir);
  await kubectlOk(['delete', 'vmsnapshot', 'web-snap', 'web-local', '-n', ns, '--wait=true', '--timeout=120s']);
});

it('survives the loss of node A: its uploaded snapshot restores on B, and deleting it no longer waits for A', async () => {
  const snap = await hibernateUploaded('node-a', 'db', 33);
  expect(snap.status.upload.phase).toBe('Uploaded');
  const prefix = snap.status.upload.prefix as string;
  expect(await objectKeys(prefix)).toEqual([`${prefix}data`, `${prefix}manifest.json`]);

  // Node A is lost: its agent stops and its disk is gone.
  await stack.killAgent('node-a', 'SIGKILL');
  fs.rmSync(agent('node-a').storageRoot, { recursive: true, force: true });

  await restoreOn('node-b', 'db-on-b', 'db-snap', 'Eager');
  await expectVerifying(path.join(agent('node-b').vmRoot, ns, 'db', 'serial.log'), { from: 0 });
  const cached = path.join(agent('node-b').storageRoot, ns, 'fetched', snapshotFileName(snap as never));
  expect(fs.existsSync(cached)).toBe(true);

  // deletionPolicy Delete with node A silent past the grace period: released with NodeLost, the
  // repository copy removed; B's fetched copy goes by the cache rule (its VMSnapshot is gone).
  await kubectlOk(['delete', 'vmsnapshot', 'db-snap', '-n', ns, '--wait=true', `--timeout=${GRACE_SECONDS + 120}s`]);
  const events = await kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'reason=NodeLost', '-o', 'jsonpath={.items[*].message}']);
  expect(events).toMatch(new RegExp(`node ${agent('node-a').nodeName} is lost: .*released; .* is left on that node; removed its copy in bucket ${BUCKET} at ${prefix}`));
  expect(await objectKeys(prefix)).toEqual([]);
  await poll(`${cached} to leave node B after its VMSnapshot was deleted`, () => !fs.existsSync(cached), { timeoutMs: 60_000, intervalMs: 250 });
  // The restored VM does not depend on the cache: it keeps running intact.
  const serial = path.join(agent('node-b').vmRoot, ns, 'db', 'serial.log');
  await expectVerifying(serial, { from: fs.readFileSync(serial, 'latin1').length });
});

async function setKey(key: Buffer): Promise<void> {
  await kubectlOk(['patch', 'secret', 'e2e-s3-key', '-n', stack.releaseNamespace, '--type=merge', '-p', JSON.stringify({ data: { key: key.toString('base64') } })]);
}

/** The agent's /metrics, from the port its log says it serves on. */
async function agentMetrics(node: string): Promise<string> {
  const line = fs.readFileSync(agent(node).logPath, 'utf8').split('\n').find((l) => l.includes('serving /healthz and /readyz'));
  if (!line) throw new Error(`agent ${node} serves no health port`);
  const res = await fetch(`http://127.0.0.1:${JSON.parse(line).port}/metrics`);
  return res.text();
}

function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : NaN;
}
