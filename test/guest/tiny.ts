// Tiny VMs for load and isolation tests: QEMU with a few MiB of RAM and no
// disk or kernel (the firmware finds nothing to boot and idles), so a save is
// small and fast. Running, not -S: QEMU saves a VM that never ran only once. Tied to this
// process with setpriv --pdeathsig (it dies with us, even on SIGKILL).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { findSetpriv, track } from './guest.js';

export interface TinyVm {
  qmpPath: string;
  process: ChildProcess;
  kill(): Promise<void>;
}

/** Starts QEMU with its QMP socket at <dir>/qmp.sock (where an agent's discovery looks). */
export async function startTinyVm(dir: string, memMiB = 16): Promise<TinyVm> {
  fs.mkdirSync(dir, { recursive: true });
  const qmpPath = path.join(dir, 'qmp.sock');
  fs.rmSync(qmpPath, { force: true });
  const args = [
    'qemu-system-x86_64', '-accel', 'tcg,tb-size=4', '-machine', 'pc', '-m', `${memMiB}M`, '-nodefaults', '-no-user-config',
    '-display', 'none', '-qmp', `unix:${qmpPath},server=on,wait=off`,
  ];
  const setpriv = findSetpriv();
  const [bin, ...rest] = setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', ...args] : args;
  const log = fs.openSync(path.join(dir, 'qemu.log'), 'w');
  const child = spawn(bin!, rest, { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  track(child);
  const deadline = Date.now() + 30_000;
  while (!fs.existsSync(qmpPath)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`tiny QEMU in ${dir} did not start: ${fs.readFileSync(path.join(dir, 'qemu.log'), 'utf8')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    qmpPath,
    process: child,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}
