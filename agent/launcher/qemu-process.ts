// Spawning and stopping one QEMU process. Its stdio is the launcher's (the container's), so
// `kubectl logs` shows QEMU's messages and a guest console on `-serial stdio` / `-nographic`.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface QemuProcess {
  pid: number;
  /** Resolves once the process has exited (or could not be started: code 127). */
  exited: Promise<QemuExit>;
  /** Whether it has exited already. */
  hasExited(): boolean;
  kill(signal: NodeJS.Signals): void;
}

// setpriv (util-linux) sets PR_SET_PDEATHSIG and then execs QEMU, so the kernel kills QEMU when
// the launcher dies however it dies (SIGKILL, OOM), without native code in the launcher. It
// execs, so the child's pid is QEMU's. Without setpriv, the container's pid namespace still ends
// QEMU with the container; a launcher outside a container then relies on its exit handlers.
// The signal fires when the thread that forked exits: Node forks from its main thread, whose
// end is the process's end.
const SETPRIV_CANDIDATES = ['/usr/bin/setpriv', '/bin/setpriv'];
let setpriv: string | null | undefined;

export function findSetpriv(): string | null {
  if (setpriv === undefined) {
    setpriv = null;
    for (const p of SETPRIV_CANDIDATES) {
      try {
        accessSync(p, constants.X_OK);
        setpriv = p;
        break;
      } catch {
        /* try the next */
      }
    }
  }
  return setpriv;
}

/** Pure: the program and arguments that run `argv` with the parent-death signal set. */
export function withParentDeathSignal(argv: readonly string[], setprivPath: string | null): string[] {
  return setprivPath ? [setprivPath, '--pdeathsig', 'KILL', '--', ...argv] : [...argv];
}

/**
 * `inheritFd`: an fd QEMU gets as its fd 3 (LAZY_SNAPSHOT_FD; setpriv keeps it across its exec).
 * The caller still owns its own copy and closes it once this returns: the child has it by then.
 */
export function spawnQemu(argv: readonly string[], inheritFd?: number): QemuProcess {
  const [bin, ...args] = withParentDeathSignal(argv, findSetpriv());
  const child: ChildProcess = spawn(bin!, args, { stdio: inheritFd === undefined ? 'inherit' : ['inherit', 'inherit', 'inherit', inheritFd] });
  let done = false;
  const exited = new Promise<QemuExit>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
    // Spawning itself failed (binary missing without setpriv): no 'exit' follows.
    child.once('error', () => {
      if (done) return;
      done = true;
      resolve({ code: 127, signal: null });
    });
  });
  return {
    pid: child.pid ?? 0,
    exited,
    hasExited: () => done,
    kill(signal) {
      if (done) return;
      try {
        child.kill(signal);
      } catch {
        /* it is exiting */
      }
    },
  };
}

/** SIGTERM (QEMU shuts down cleanly), SIGKILL after `graceMs`; resolves with how it ended. */
export async function stopQemu(qemu: QemuProcess, graceMs: number): Promise<QemuExit> {
  qemu.kill('SIGTERM');
  const timer = setTimeout(() => qemu.kill('SIGKILL'), graceMs);
  try {
    return await qemu.exited;
  } finally {
    clearTimeout(timer);
  }
}
