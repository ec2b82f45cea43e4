// A VM pod with a writable disk on the real node, through VMSnapshot and VMRestore: the pod's own
// QEMU freezes the disk at save time and, for the restore, starts on the frozen layer under a
// fresh overlay it creates itself; the agent opens none of the disk files. The guest writes files
// before and after the snapshot; the restore must see exactly the first ones, keep its memory and
// leave a clean file system. A tenant who swaps its frozen disk for a symlink to a host file gets
// a failed restore and the host file stays as it was.
import { randomBytes, createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { VM_LAUNCHER_SOCKET, VM_RUN_VOLUME } from '../../api/index.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { buildAndLoadImages, describeRelease, ensureNamespace, installRelease, uninstallRelease, type Release } from '../../stack/product.js';
import { ensureNodeCluster, nodeKubectl, nodeKubectlOk, type NodeCluster } from '../../stack/node-cluster.js';
import { VM_UID, vmPodManifest } from '../../stack/vm-pod.js';
import { Vm, ext4Image, inspectDisk, serial } from '../guest/disk.js';
import { launcherRequest } from '../engine/pod-fixture.js';
import { poll } from '../../kit/poll.js';
import { finished as finishedAsAdmin, getAsAdmin } from './phase.js';
import { vmRestore, vmSnapshot } from '../../kit/manifests.js';

const suffix = randomBytes(3).toString('hex');
const ns = `vmdisks-${suffix}`;
const VM = 'disky';
/** Where the VM container mounts its disk volume. */
const DISK_DIR = '/var/lib/vm';
const DISK_VOLUME = 'vmdisk';
let cp: NodeCluster;
let release: Release;
let scratch: string;
/** The disk volume and the run volume on the node, through short links (unix socket paths are short). */
let diskDir: string;
let runDir: string;
let vm: Vm;

const getJson = (resource: string) => getAsAdmin(resource, ns);

const finished = (resource: string, expected: 'Succeeded' | 'Failed') =>
  finishedAsAdmin(resource, ns, { expected, timeoutMs: 240_000, context: () => describeRelease(release.namespace) });

const apply = (obj: object) => nodeKubectlOk(['apply', '-f', '-'], { input: JSON.stringify(obj) });
const snapshot = (name: string) => apply(vmSnapshot({ name, namespace: ns }, { vmName: VM }));
const restore = (name: string, snapshotName: string) => apply(vmRestore({ name, namespace: ns }, { snapshotName, ifRunning: 'Replace' }));

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** The disk as the host sees it: the pod names its layers by pod paths, so a copy is rebased onto the node's. */
async function inspectPodLayer(podPath: string): Promise<Awaited<ReturnType<typeof inspectDisk>>> {
  const copy = path.join(scratch, `inspect-${path.basename(podPath)}`);
  fs.copyFileSync(path.join(diskDir, path.basename(podPath)), copy);
  execFileSync('qemu-img', ['rebase', '-u', '-b', path.join(diskDir, 'disk.raw'), '-F', 'raw', '-f', 'qcow2', copy]);
  try {
    return await inspectDisk(copy);
  } finally {
    fs.rmSync(copy, { force: true });
  }
}

beforeAll(async () => {
  cp = await ensureNodeCluster();
  const images = await buildAndLoadImages(cp);
  const base = 20000 + Math.floor(Math.random() * 20000);
  scratch = fs.mkdtempSync(path.join(process.env.VMSNAP_TEST_DIR ?? os.tmpdir(), `vmsnap-node-disks-${suffix}-`));
  release = await installRelease(cp, images, {
    namespace: `vmsnap-${suffix}`,
    storageRoot: path.join(scratch, 'snapshots'),
    ports: { metrics: base, operatorProbes: base + 1, agentProbes: base + 2 },
  });
  await ensureNamespace(ns, 'restricted');

  // The guest in disk mode: its disk on a volume of the pod, its console in a file there, commands on a socket there.
  const pod = vmPodManifest({
    namespace: ns,
    name: VM,
    image: images.guest,
    memMiB: 256,
    fillMiB: 32,
    seed: 11,
    args: (a) => {
      const args = a.slice(0, a.indexOf('-serial'));
      args[args.indexOf('-append') + 1] += ' vmsnap.disk=1';
      return [
        ...args,
        '-chardev', `file,id=serial0,path=${DISK_DIR}/serial.log,append=on`, '-serial', 'chardev:serial0',
        '-drive', `file=${DISK_DIR}/disk.raw,format=raw,if=virtio`,
        '-chardev', `socket,id=ctl,path=${DISK_DIR}/ctl.sock,server=on,wait=off`, '-serial', 'chardev:ctl',
      ];
    },
  }) as any;
  const container = pod.spec.containers[0];
  container.volumeMounts.push({ name: DISK_VOLUME, mountPath: DISK_DIR });
  // The disk is put on the volume before QEMU starts: the launcher waits for `start`.
  container.env = [{ name: 'VMSNAP_LAUNCHER_START', value: 'wait' }];
  pod.spec.volumes.push({ name: DISK_VOLUME, emptyDir: {} });
  await apply(pod);
  await nodeKubectlOk(['wait', '--for=condition=Ready', `pod/${VM}`, '-n', ns, '--timeout=120s']);
  const uid = (await nodeKubectlOk(['get', 'pod', VM, '-n', ns, '-o', 'jsonpath={.metadata.uid}'])).trim();
  const volumes = path.join(cp.kubeletRootDir, 'pods', uid, 'volumes', 'kubernetes.io~empty-dir');
  diskDir = path.join(scratch, 'disk');
  runDir = path.join(scratch, 'run');
  fs.symlinkSync(path.join(volumes, DISK_VOLUME), diskDir);
  fs.symlinkSync(path.join(volumes, VM_RUN_VOLUME), runDir);
  const disk = path.join(diskDir, 'disk.raw');
  await ext4Image(disk);
  fs.chownSync(disk, VM_UID, VM_UID);
  expect(await launcherRequest(path.join(runDir, VM_LAUNCHER_SOCKET), '{"op":"start"}')).toMatchObject({ ok: true, state: 'running' });
  vm = new Vm(diskDir);
  await serial(vm.log, /VMSNAP DISK MOUNTED[^]*VMSNAP PASS n=1 ok/, 0, 180_000);
  await poll(
    'the agent to list the VM pod as running',
    async () => {
      const inv = await nodeKubectl(['get', 'vminventory', cp.nodeName, '-o', 'json']);
      const vms = inv.code === 0 ? ((JSON.parse(inv.stdout).status?.vms ?? []) as any[]) : [];
      return vms.some((v) => v.namespace === ns && v.name === VM && v.state === 'running');
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
}, 60 * 60 * 1000);

afterAll(async () => {
  if (!cp) return;
  if (release) await nodeKubectl(['delete', 'vmrestores,vmsnapshots', '--all', '-n', ns, '--wait=true', '--timeout=120s']);
  await nodeKubectl(['delete', 'namespace', ns, '--wait=false']);
  if (release) {
    await uninstallRelease(cp, release);
    await nodeKubectl(['delete', 'namespace', release.namespace, '--wait=false']);
  }
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
}, 300_000);

test('a VM pod with a writable disk: the restore sees the files of the snapshot, memory intact, file system clean; the frozen disk is never written', async () => {
  await vm.write('a1');
  await vm.write('a2');
  await snapshot('s1');
  const s1 = await finished('vmsnapshot/s1', 'Succeeded');
  const [rec] = readHeader(s1.status.file.path).metadata.disks ?? [];
  expect(rec).toMatchObject({ base: `${DISK_DIR}/disk.raw`, chain: [`${DISK_DIR}/disk.raw`], overlay: expect.stringMatching(/^\/var\/lib\/vm\/disk\.raw\.vmsnap-[0-9a-z]+\.qcow2$/) });
  // The pod's QEMU made the overlay in the pod's volume, as the pod's user.
  expect(fs.statSync(path.join(diskDir, path.basename(rec!.overlay!))).uid).toBe(VM_UID);
  const frozen = sha256(path.join(diskDir, 'disk.raw'));

  await vm.write('b1');
  expect(await vm.list()).toEqual(['a1:ok', 'a2:ok', 'b1:ok']);

  const from = vm.offset();
  await restore('r1', 's1');
  await finished('vmrestore/r1', 'Succeeded');
  await vm.memoryVerifies(from);
  expect(await vm.list()).toEqual(['a1:ok', 'a2:ok']);
  await vm.write('c1');
  expect(await vm.list()).toEqual(['a1:ok', 'a2:ok', 'c1:ok']);
  await vm.umount();

  // The restored VM runs on a new overlay (the pod user's) over the frozen disk, which is unchanged.
  const overlays = fs.readdirSync(diskDir).filter((f) => f.endsWith('.qcow2') && f !== path.basename(rec!.overlay!));
  expect(overlays).toHaveLength(1);
  expect(fs.statSync(path.join(diskDir, overlays[0]!)).uid).toBe(VM_UID);
  expect(await inspectPodLayer(overlays[0]!)).toMatchObject({ files: ['a1', 'a2', 'c1'], clean: true });
  expect(sha256(path.join(diskDir, 'disk.raw'))).toBe(frozen);
});

test('attack: the frozen disk swapped for a symlink to a host file fails the restore; the host file is untouched', async () => {
  await snapshot('s2');
  const s2 = await finished('vmsnapshot/s2', 'Succeeded');
  const [rec] = readHeader(s2.status.file.path).metadata.disks ?? [];
  const layer = path.join(diskDir, path.basename(rec!.base));
  expect(fs.lstatSync(layer).isFile()).toBe(true);

  // A host file the tenant names (as `ln -sf` inside the pod would).
  const secret = path.join(scratch, 'host-secret.raw');
  fs.copyFileSync(path.join(diskDir, 'disk.raw'), secret);
  const before = { hash: sha256(secret), mtime: fs.statSync(secret).mtimeMs };
  fs.renameSync(layer, `${layer}.moved`);
  fs.symlinkSync(secret, layer);

  await restore('r2', 's2');
  const r2 = await finished('vmrestore/r2', 'Failed');
  expect(r2.status.error.message).toMatch(/restore into VM pod/);
  expect(sha256(secret)).toBe(before.hash);
  expect(fs.statSync(secret).mtimeMs).toBe(before.mtime);
  expect(fs.readdirSync(scratch).filter((f) => f.startsWith('host-secret'))).toEqual(['host-secret.raw']);
});

test("deleting a VM pod's snapshot keeps its layers in the pod's volume and says so (the agent deletes no pod file)", async () => {
  const before = fs.readdirSync(diskDir).filter((f) => f.endsWith('.qcow2') || f.endsWith('.raw')).sort();
  await nodeKubectlOk(['delete', 'vmsnapshot', 's1', '-n', ns, '--wait=true', '--timeout=120s']);
  const kept = await poll('the DiskLayersKept event of s1', async () => {
    const events = JSON.parse(await nodeKubectlOk(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=s1', '-o', 'json'])).items as any[];
    return events.find((e) => e.reason === 'DiskLayersKept');
  }, { timeoutMs: 60_000, intervalMs: 500 });
  expect(kept.message).toMatch(/files in the VM pod's own volume, which the agent never merges or deletes/);
  expect(fs.readdirSync(diskDir).filter((f) => f.endsWith('.qcow2') || f.endsWith('.raw')).sort()).toEqual(before);
});
