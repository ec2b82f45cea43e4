// A VM pod as the agent sees it on a node, without a kubelet: the kubelet's pod directory layout
// under a scratch "kubelet root", and a real cgroup v1 directory named like the kubelet's
// (cgroupfs driver: .../pod<uid>/) that test processes are moved into. The cgroups live under a
// parent of their own, never under a real kubelet's kubepods.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RUN_VOLUME_REL } from '../../agent/src/vm/run-volume.js';

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
