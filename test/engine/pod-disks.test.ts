// Writable disks of a VM pod, with the real launcher (as the pod's user) around a real guest that
// has an ext4 disk, driven the way the agent drives a pod (daemon/pod-restore.ts): the save freezes
// the disks through the pod's QEMU (vm/pod-disks.ts), the restore asks the launcher to start QEMU
// on the snapshot's frozen layers and has that QEMU put them under fresh overlays, then loads the
// snapshot over QMP. The test process stays root, as the agent, and never touches the disk files
// except to check them afterwards.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { saveVm } from '../../agent/src/engine/save.js';
import { restoreVm } from '../../agent/src/engine/restore.js';
import { QmpClient } from '../../agent/src/qmp/client.js';
import type { DiskRecord } from '../../agent/src/engine/disks.js';
import { diskSwaps, podDiskFreezer, startOnRestoreOverlays } from '../../agent/src/vm/pod-disks.js';
import { launcherRequest } from '../../agent/src/vm/launcher-client.js';
import type { LauncherRequest } from '../../api/vm-pod.js';
import { guestArgs } from '../../kit/guest.js';
import { Vm, ext4Image, inspectDisk, serial } from '../guest/disk.js';
import { canRunAsPodUser, podUserAssets, POD_UID, spawnLauncher } from './pod-fixture.js';
import { scratchDir, sha256File, stopProcess } from './harness.js';

let dir: string;
const launchers: ChildProcess[] = [];
const asPodUser = canRunAsPodUser();

beforeAll(() => {
  dir = scratchDir('pod-disks');
});
afterAll(async () => {
  for (const l of launchers) await stopProcess(l, 15_000);
  fs.rmSync(dir, { recursive: true, force: true });
});

interface PodVm {
  vm: Vm;
  disk: string;
  /** The pod's writable volume: where its disk lives (its QEMU's files too). */
  volume: string;
  qmp: string;
  launcher: string;
  request(req: LauncherRequest): ReturnType<typeof launcherRequest>;
}

/** A VM pod without a kubelet: the launcher as the pod's user, the disk on a volume of that user. */
async function podWithDisk(name: string, seed: number): Promise<PodVm> {
  const volume = path.join(dir, name, 'vol');
  const run = path.join(dir, name, 'run');
  fs.mkdirSync(volume, { recursive: true });
  fs.mkdirSync(run, { recursive: true, mode: 0o700 });
  const disk = path.join(volume, 'disk.raw');
  await ext4Image(disk);
  if (asPodUser) {
    fs.chmodSync(path.join(dir, name), 0o755);
    fs.chownSync(volume, POD_UID, POD_UID);
    fs.chownSync(disk, POD_UID, POD_UID);
  }
  const argv = guestArgs(await podUserAssets(dir), { dir: volume, memMiB: 256, fillMiB: 32, seed, disk: { path: disk, format: 'raw' }, pod: { serial: 'file' } });
  const child = spawnLauncher(run, argv);
  launchers.push(child);
  child.stdout!.resume();
  child.stderr!.resume();
  const vm = new Vm(volume);
  await serial(vm.log, /VMSNAP DISK MOUNTED[^]*VMSNAP PASS n=1 ok/, 0, 180_000);
  const launcher = path.join(run, 'launcher.sock');
  return { vm, disk, volume, qmp: path.join(run, 'qmp.sock'), launcher, request: (req) => launcherRequest(net.createConnection(launcher), req, 60_000) };
}

/** As the agent saves a VM pod: its QEMU freezes the disks inside the pod's volumes. */
async function save(p: PodVm, file: string) {
  return saveVm({ qmpSocket: p.qmp, outPath: file, channels: 2, directIO: 'auto', after: 'resume', live: false, diskFreezer: podDiskFreezer([p.volume]) });
}

/** As the agent restores a VM pod in place with frozen disks (daemon/pod-restore.ts). */
async function restoreInPlace(p: PodVm, file: string, disks: DiskRecord[]): Promise<string[]> {
  const reply = await p.request({ op: 'restart-incoming', disks: diskSwaps(disks) });
  expect(reply).toMatchObject({ ok: true, state: 'incoming' });
  const client = await QmpClient.connect(p.qmp);
  let overlays: string[];
  try {
    overlays = await startOnRestoreOverlays(client, disks);
  } finally {
    client.close();
  }
  await restoreVm({ inPath: file, qmpSocket: p.qmp, directIO: 'auto' });
  return overlays;
}

it('a VM pod restores the files of its snapshot, twice in a chain: memory intact, file system clean, frozen layers never written, every layer made by the pod user', async () => {
  const p = await podWithDisk('chain', 41);
  await p.vm.write('a1');
  await p.vm.write('a2');

  const file1 = path.join(dir, 'one.vms');
  const s1 = await save(p, file1);
  expect(s1.disks).toEqual([expect.objectContaining({ base: p.disk, argvPath: p.disk, baseFormat: 'raw', chain: [p.disk] })]);
  expect(s1.disks[0]!.baseFile).toBeUndefined(); // the agent looked at no file
  const o1 = s1.disks[0]!.overlay!;
  expect(path.dirname(o1)).toBe(p.volume);
  // QEMU made the overlay, as the pod's user.
  if (asPodUser) expect(fs.statSync(o1).uid).toBe(POD_UID);
  const base1 = await sha256File(p.disk);

  await p.vm.write('b1');
  expect(await p.vm.list()).toEqual(['a1:ok', 'a2:ok', 'b1:ok']);

  // Restore 1: the files of the first instant, not b1.
  let from = p.vm.offset();
  const [r1] = await restoreInPlace(p, file1, s1.disks);
  await p.vm.memoryVerifies(from);
  expect(await p.vm.list()).toEqual(['a1:ok', 'a2:ok']);
  expect(path.dirname(r1!)).toBe(p.volume);
  if (asPodUser) expect(fs.statSync(r1!).uid).toBe(POD_UID);

  // Snapshot 2 freezes the restore's overlay: its chain reaches the pod's own image.
  await p.vm.write('c1');
  const file2 = path.join(dir, 'two.vms');
  const s2 = await save(p, file2);
  expect(s2.disks).toEqual([expect.objectContaining({ base: r1, chain: [r1, p.disk], argvPath: p.disk })]);
  const base2 = await sha256File(r1!);
  await p.vm.write('d1');

  // Restore 2: the launcher finds its own image in the chain and starts the disk on r1.
  from = p.vm.offset();
  const [r2] = await restoreInPlace(p, file2, s2.disks);
  await p.vm.memoryVerifies(from);
  expect(await p.vm.list()).toEqual(['a1:ok', 'a2:ok', 'c1:ok']);
  await p.vm.write('e1');
  await p.vm.umount();
  const seen = await inspectDisk(r2!);
  expect(seen).toMatchObject({ files: ['a1', 'a2', 'c1', 'e1'], clean: true });
  // The frozen layers are as the saves left them.
  expect(await sha256File(p.disk)).toBe(base1);
  expect(await sha256File(r1!)).toBe(base2);
  // Restore 1 is still the files of its instant: the layer the VM had moved away from (o1) kept b1 only there.
  expect((await inspectDisk(o1)).files).toEqual(['a1', 'a2', 'b1']);
});

it('attacks: a frozen layer replaced by a symlink to a host file, and chains naming other files, reach nothing', async () => {
  const p = await podWithDisk('attack', 43);
  await p.vm.write('a1');
  const file = path.join(dir, 'attack.vms');
  const s = await save(p, file);
  await p.vm.write('b1');

  // The host file the tenant aims at: root's, unreadable to the pod's user.
  const secretDir = path.join(dir, 'host');
  fs.mkdirSync(secretDir, { mode: 0o700 });
  const secret = path.join(secretDir, 'secret.raw');
  fs.copyFileSync(p.disk, secret);
  fs.chmodSync(secret, 0o600);
  const before = { hash: await sha256File(secret), mtime: fs.statSync(secret).mtimeMs };

  // A chain naming a file the pod's command line does not: the launcher starts nothing.
  await expect(p.request({ op: 'restart-incoming', disks: [{ chain: [secret] }] })).rejects.toThrow(/none of its images .* appears in the QEMU command line/);
  // A chain with `..` does not even parse.
  const raw = await new Promise<string>((resolve) => {
    const sock = net.createConnection(p.launcher);
    let out = '';
    sock.setEncoding('utf8').on('data', (d: string) => (out += d));
    sock.on('close', () => resolve(out));
    sock.end(JSON.stringify({ op: 'restart-incoming', disks: [{ chain: [`${p.volume}/../host/secret.raw`] }] }) + '\n');
  });
  expect(JSON.parse(raw.trim())).toEqual({ ok: false, error: expect.stringMatching(/disks\.0\.chain\.0.*without \. or \.\. segments/) });
  // The VM still runs: nothing was restarted.
  expect(await p.vm.list()).toEqual(['a1:ok', 'b1:ok']);

  if (asPodUser) {
    // The tenant swaps its frozen layer (the pod's image) for a link to the host file.
    fs.renameSync(p.disk, `${p.disk}.moved`);
    fs.symlinkSync(secret, p.disk);
    // QEMU, as the pod's user, cannot open it (it may still have answered the launcher's QMP probe
    // before it tried): the restore fails; nothing of the agent's followed the link.
    await expect(restoreInPlace(p, file, s.disks)).rejects.toThrow();
  }
  expect(await sha256File(secret)).toBe(before.hash);
  expect(fs.statSync(secret).mtimeMs).toBe(before.mtime);
  expect(fs.readdirSync(secretDir)).toEqual(['secret.raw']);
});
