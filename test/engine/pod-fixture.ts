// A VM pod as the agent sees it on a node, without a kubelet: the kubelet's pod directory layout
// under a scratch "kubelet root", and a real cgroup v1 directory named like the kubelet's
// (cgroupfs driver: .../pod<uid>/) that test processes are moved into. The cgroups live under a
// parent of their own, never under a real kubelet's kubepods.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { LauncherReplySchema, VM_RUN_DIR_ENV, type LauncherReply } from '../../api/vm-pod.js';
import { packageRoot } from '../../agent/src/package-root.js';
import { RUN_VOLUME_REL } from '../../agent/src/vm/run-volume.js';
import { ensureGuestAssets, type GuestAssets } from '../../kit/guest.js';
import { findSetpriv } from '../../kit/qemu.js';

const CGROUP_HIERARCHY = '/sys/fs/cgroup/pids';

export interface FakePod {
  uid: string;
  /** <kubeletRoot>/pods/<uid>/volumes/kubernetes.io~empty-dir/vmsnap-run */
  runDir: string;
  /**
   * The run volume as the pod's processes see it (VM_RUN_MOUNT in a real pod): a short link to
   * runDir, because a unix socket path must stay under 108 bytes and the node path does not
   * (the agent connects through /proc/self/fd/<fd> for the same reason). Remove with removeFakePod.
   */
  mount: string;
}

export function fakePod(kubeletRoot: string, uid: string = randomUUID()): FakePod {
  const runDir = path.join(kubeletRoot, 'pods', uid, RUN_VOLUME_REL);
  fs.mkdirSync(runDir, { recursive: true });
  const mount = path.join(os.tmpdir(), `vmsnap-pod-${uid.slice(0, 8)}`);
  fs.rmSync(mount, { force: true });
  fs.symlinkSync(runDir, mount);
  return { uid, runDir, mount };
}

export function removeFakePod(pod: FakePod): void {
  fs.rmSync(pod.mount, { force: true });
}

/** Can this machine give a process a pod cgroup (root, cgroup v1 pids hierarchy)? */
export function podCgroupsAvailable(): boolean {
  return process.getuid?.() === 0 && fs.existsSync(path.join(CGROUP_HIERARCHY, 'cgroup.procs'));
}

/** Pod cgroups under one parent of this test run; remove() moves their processes out and deletes them. */
export class PodCgroups {
  readonly parent = path.join(CGROUP_HIERARCHY, `vmsnap-podtest-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  private readonly dirs: string[] = [];

  /** Moves `pid` into the cgroup the kubelet would give pod `uid` (cgroupfs driver layout). */
  join(uid: string, pid: number): void {
    const dir = path.join(this.parent, 'burstable', `pod${uid}`);
    if (!this.dirs.includes(dir)) {
      fs.mkdirSync(dir, { recursive: true });
      this.dirs.push(dir);
    }
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
  }

  remove(): void {
    for (const dir of this.dirs) {
      try {
        for (const pid of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
          try {
            fs.writeFileSync(path.join(CGROUP_HIERARCHY, 'cgroup.procs'), pid);
          } catch {
            // exited meanwhile
          }
        }
        fs.rmdirSync(dir);
      } catch {
        // already gone
      }
    }
    for (const d of [path.join(this.parent, 'burstable'), this.parent]) {
      try {
        fs.rmdirSync(d);
      } catch {
        // already gone
      }
    }
  }
}

/** A process that listens on a unix socket and writes `greeting` to every client (a stand-in server). */
export async function listener(socketPath: string, greeting = 'hello\n'): Promise<ChildProcess> {
  fs.rmSync(socketPath, { force: true });
  const code = `require('net').createServer((s) => { s.on('error', () => {}); s.write(${JSON.stringify(greeting)}); }).listen(${JSON.stringify(socketPath)}, () => console.log('ready'));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (c) => reject(new Error(`listener for ${socketPath} exited (${c})`)));
  });
  return child;
}

// ---- the VM container: the real launcher, as the pod's user ----

/** The launcher as built (npm run build). */
export const LAUNCHER = path.join(packageRoot(), 'dist/agent/launcher/main.js');

/** The VM container's user in examples and charts; the launcher and QEMU run as it when we can. */
export const POD_UID = 10001;

/** Whether test processes can run as POD_UID (root, with setpriv to drop to it). */
export function canRunAsPodUser(): boolean {
  return process.getuid?.() === 0 && findSetpriv() !== null;
}

/**
 * The guest's kernel and initrd where the pod's user can read them (root's cache is not), as an
 * image would carry them: copied into `<dir>/assets`; `dir` is made traversable. Without
 * canRunAsPodUser, the cached assets as they are.
 */
export async function podUserAssets(dir: string): Promise<GuestAssets> {
  const cached = await ensureGuestAssets();
  if (!canRunAsPodUser()) return cached;
  fs.chmodSync(dir, 0o755);
  const own = path.join(dir, 'assets');
  fs.mkdirSync(own, { recursive: true });
  const assets = { kernel: path.join(own, 'vmlinuz'), initrd: path.join(own, 'initrd') };
  fs.copyFileSync(cached.kernel, assets.kernel);
  fs.copyFileSync(cached.initrd, assets.initrd);
  return assets;
}

/**
 * Starts the launcher (`node dist/agent/launcher/main.js <argv>`) as a VM container would:
 * unprivileged (uid POD_UID) when canRunAsPodUser, with VMSNAP_RUN_DIR = `runDir`, which is handed
 * to that user. stdout and stderr are piped.
 */
export function spawnLauncher(runDir: string, argv: readonly string[], env: Record<string, string> = {}): ChildProcess {
  if (!fs.existsSync(LAUNCHER)) throw new Error(`${LAUNCHER} is missing: run npm run build`);
  const asPodUser = canRunAsPodUser();
  if (asPodUser) fs.chownSync(runDir, POD_UID, POD_UID);
  const prefix = asPodUser ? [findSetpriv()!, `--reuid=${POD_UID}`, `--regid=${POD_UID}`, '--clear-groups', '--'] : [];
  const [bin, ...args] = [...prefix, process.execPath, LAUNCHER, ...argv];
  return spawn(bin!, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, [VM_RUN_DIR_ENV]: runDir, VMSNAP_QEMU_STOP_GRACE_MS: '5000', ...env },
  });
}

/** One request line to a launcher's control socket, one reply line back (parsed), on a fresh connection. */
export function launcherRequest(socketPath: string, line: string): Promise<LauncherReply> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', reject);
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.destroy();
      try {
        resolve(LauncherReplySchema.parse(JSON.parse(buf.slice(0, nl))));
      } catch (err) {
        reject(err as Error);
      }
    });
    sock.write(line + '\n');
  });
}
