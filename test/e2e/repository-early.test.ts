// A restore on node B starts its QEMU while the snapshot still downloads (the operator and two
// agents as processes on the real API server, a real SeaweedFS, real QEMU guests). The object
// server is killed once that QEMU runs: the restore ends Failed saying the fetch failed, and
// nothing of it is left on B (no QEMU, no copy, no partial download). With the server back, the
// same restore succeeds into the QEMU started during the download, guest memory intact.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { snapshotFileName } from '../../api/index.js';
import { kubectl } from '../../stack/controlplane.js';
import { startGuest, expectVerifying, type Guest } from '../../kit/guest.js';
import type { S3Server } from '../../stack/seaweedfs.js';
import { startRepositoryStack } from './repository-fixture.js';
import { apply, getJson, waitFor, waitForPhase } from './objects.js';
import { tearDownStack, type Stack } from '../../stack/e2e.js';
import { killQemusUnder, qemuPidsMentioning } from '../../kit/qemu.js';
import { poll } from '../../kit/poll.js';
import { vmRestore, vmSnapshot, vmSnapshotClass } from '../../kit/manifests.js';

const BUCKET = 'vmsnap-e2e-early';
let server: S3Server;
let stack: Stack;
let ns: string;
let className: string;
const guests: Guest[] = [];

const agent = (node: string) => stack.agents.get(node)!;

beforeAll(async () => {
  const repo = await startRepositoryStack({ bucket: BUCKET, prefix: 'e2e-early', secrets: ['e2e-s3', 'e2e-s3-key'] });
  ({ server, stack, namespace: ns, className } = repo);
  await apply([
    repo.credentialsSecret('e2e-s3'),
    repo.secret('e2e-s3-key', { key: randomBytes(32) }),
    // One part at a time, decrypted and decompressed: the download lasts seconds, long enough to kill the server in it.
    vmSnapshotClass(className, {
      deletionPolicy: 'Delete',
      repository: { endpoint: server.endpoint, bucket: BUCKET, credentialsSecret: 'e2e-s3', encryptionKeySecret: 'e2e-s3-key', compression: 'Zstd', parallelism: 1 },
    }),
  ]);
}, 30 * 60 * 1000);

afterAll(async () => {
  if (stack) {
    await kubectl(['delete', 'vmsnapshotclass', className, '--ignore-not-found']);
    killQemusUnder(stack.workDir);
  }
  await tearDownStack(stack, guests);
  await server?.stop();
});

it('a download that fails after QEMU started leaves no QEMU and no copy on node B; retried, the restore uses the QEMU started during the download', async () => {
  const vm = 'early';
  const g = await startGuest({ dir: path.join(agent('node-a').vmRoot, ns, vm), name: vm, memMiB: 512, fillMiB: 320, seed: 41 });
  guests.push(g);
  await g.waitForSerial(/VMSNAP PASS n=1 ok/, 300_000);
  await apply(vmSnapshot(`${vm}-snap`, { vmName: vm, className, afterSnapshot: 'Stop' }), ns);
  await waitForPhase(`vmsnapshot/${vm}-snap`, ns, 'Succeeded');
  await g.exited;
  await waitFor(`vmsnapshot/${vm}-snap`, ns, '{.status.upload.phase}', (p) => p === 'Uploaded' || p === 'Failed', 300_000);
  const snap = await getJson(`vmsnapshot/${vm}-snap`, ns);
  expect(snap.status.upload.phase).toBe('Uploaded');

  const bDir = path.join(agent('node-b').vmRoot, ns, vm);
  const cached = path.join(agent('node-b').storageRoot, ns, 'fetched', snapshotFileName(snap as never));
  const nodeName = agent('node-b').nodeName;

  await apply(vmRestore('early-killed', { snapshotName: `${vm}-snap`, nodeName }), ns);
  // QEMU on B while the copy is still a partial download: then the server dies.
  await poll('a QEMU on node B while the snapshot downloads', () => qemuPidsMentioning(bDir).length > 0, { timeoutMs: 120_000, intervalMs: 10 });
  expect(fs.existsSync(`${cached}.partial`)).toBe(true);
  expect(fs.existsSync(cached)).toBe(false);
  await server.kill();
  const failed = await waitForPhase('vmrestore/early-killed', ns, 'Failed', 300_000);
  expect(failed.status.error.message).toMatch(new RegExp(`cannot fetch VMSnapshot ${ns}/${vm}-snap from its repository: .*(unreachable|dropped|downloading part)`));
  // The clean-up quit the QEMU before the status was written (its process may take a moment to be gone).
  await poll('the QEMU on node B to be gone', () => qemuPidsMentioning(bDir).length === 0, { timeoutMs: 5_000, intervalMs: 50 });
  expect(fs.existsSync(cached)).toBe(false);
  expect(fs.existsSync(`${cached}.partial`)).toBe(false);

  await server.start();
  await apply(vmRestore('early-retried', { snapshotName: `${vm}-snap`, nodeName }), ns);
  await waitForPhase('vmrestore/early-retried', ns, 'Succeeded', 300_000);
  expect(fs.readFileSync(agent('node-b').logPath, 'utf8')).toMatch(/QEMU started while the snapshot downloads/);
  await expectVerifying(path.join(bDir, 'serial.log'), { from: 0 });
  killQemusUnder(bDir);
});
