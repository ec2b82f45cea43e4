// QEMU control for suites, the bench and the demo: one launcher (no QEMU outlives the test
// process), QEMU's run state, and what /proc says about processes.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { waitForExit } from '../agent/src/daemon/qemu-control.js';
import { QmpClient } from '../agent/src/qmp/client.js';
import { poll } from './poll.js';

export interface QemuVm {
  qmpPath: string;
  pid: number;
  /** The QEMU command line, binary first. */
  argv: string[];
  process: ChildProcess;
  /** QEMU's exit code (null if it died of a signal). */
  exited: Promise<number | null>;
  /** Sends `signal` (default SIGTERM; SIGKILL after 5 s) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface LaunchOptions {
  /** Binary first; must create its QMP socket at `qmpPath`. */
  argv: string[];
  qmpPath: string;
  /** QEMU's stdout and stderr; default: stderr passes through, stdout is dropped. */
  logPath?: string;
  /** More to say when QEMU fails to start (a serial log's tail). */
  context?: () => string;
}

/** Starts QEMU and resolves once its QMP socket exists; a stale socket is removed first. */
export async function launchQemu(opts: LaunchOptions): Promise<QemuVm> {
  fs.rmSync(opts.qmpPath, { force: true });
  const setpriv = findSetpriv();
  const [bin, ...args] = setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', ...opts.argv] : opts.argv;
  const log = opts.logPath === undefined ? undefined : fs.openSync(opts.logPath, 'w');
  let child: ChildProcess;
  try {
    child = spawn(bin!, args, { stdio: log === undefined ? ['ignore', 'ignore', 'inherit'] : ['ignore', log, log] });
  } finally {
    if (log !== undefined) fs.closeSync(log);
  }
  track(child);
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve((exitCode = code)));
    child.once('error', () => resolve((exitCode = null)));
  });
  const failure = (what: string) => {
    const text = opts.logPath && fs.existsSync(opts.logPath) ? fs.readFileSync(opts.logPath, 'latin1').trim() : '';
    return new Error(`QEMU ${what}\n  argv: ${opts.argv.join(' ')}${text ? `\n  log:\n${text}` : ''}${opts.context?.() ?? ''}`);
  };
  try {
    await poll(`QMP socket ${opts.qmpPath}`, () => {
      if (exitCode !== undefined) throw failure(`exited (code ${exitCode}) before creating ${opts.qmpPath}`);
      return fs.existsSync(opts.qmpPath);
    }, { timeoutMs: 30_000, intervalMs: 10 });
  } catch (err) {
    child.kill('SIGKILL');
    throw exitCode === undefined ? failure(String(err)) : err;
  }
  return {
    qmpPath: opts.qmpPath,
    pid: child.pid ?? -1,
    argv: opts.argv,
    process: child,
    exited,
    async kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (exitCode !== undefined) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited.finally(() => clearTimeout(timer));
    },
  };
}

/**
 * A tiny VM: a few MiB of RAM, no disk or kernel (the firmware finds nothing to boot and idles),
 * so a save is small and fast. Running, not -S: QEMU saves a VM that never ran only once. Its QMP
 * socket is <dir>/qmp.sock, where an agent's discovery looks.
 */
export function startTinyVm(dir: string, memMiB = 16): Promise<QemuVm> {
  fs.mkdirSync(dir, { recursive: true });
  const qmpPath = path.join(dir, 'qmp.sock');
  const argv = [
    'qemu-system-x86_64', '-accel', 'tcg,tb-size=4', '-machine', 'pc', '-m', `${memMiB}M`, '-nodefaults', '-no-user-config',
    '-display', 'none', '-qmp', `unix:${qmpPath},server=on,wait=off`,
  ];
  return launchQemu({ argv, qmpPath, logPath: path.join(dir, 'qemu.log') });
}

// ---- no QEMU outlives the test process ----

const live = new Set<ChildProcess>();
process.on('exit', () => live.forEach((c) => c.kill('SIGKILL')));

function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
}

// setpriv --pdeathsig makes the kernel kill QEMU even if this process dies without running its
// 'exit' handlers (SIGKILL, crash). It execs, so the child's pid is QEMU's.
let setprivPath: string | null | undefined;
export function findSetpriv(): string | null {
  if (setprivPath === undefined) {
    const p = ['/usr/bin/setpriv', '/bin/setpriv'].find((f) => fs.existsSync(f));
    setprivPath = p && spawnSync(p, ['--pdeathsig', 'KILL', 'true'], { stdio: 'ignore' }).status === 0 ? p : null;
  }
  return setprivPath;
}

// ---- asking QEMU ----

/** One QMP command over a connection of its own. */
export async function qmpExecute<T>(socket: string, command: string, args: Record<string, unknown> = {}): Promise<T> {
  const c = await QmpClient.connect(socket);
  try {
    return await c.execute<T>(command, args);
  } finally {
    c.close();
  }
}

/** QEMU's run state (`running`, `paused`, `inmigrate`, ...) and its migration's status. */
export async function qemuRunState(qmp: string): Promise<{ status: string; migration?: string }> {
  const c = await QmpClient.connect(qmp);
  try {
    const s = await c.execute<{ status: string }>('query-status');
    const m = await c.execute<{ status?: string }>('query-migrate');
    return { status: s.status, migration: m.status };
  } finally {
    c.close();
  }
}

// ---- what /proc says ----

/** A process's argv (binary first), or undefined once it is gone or not ours to read. */
export function procArgv(pid: number): string[] | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return undefined;
  }
}

/** The pids whose argv satisfies `match`. */
export function pidsWhere(match: (argv: string[]) => boolean): number[] {
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((pid) => {
      const argv = procArgv(pid);
      return argv !== undefined && argv.length > 0 && match(argv);
    });
}

/** QEMUs whose command line mentions `text` (a run's directory, a socket path). */
export function qemuPidsMentioning(text: string): number[] {
  return pidsWhere((argv) => argv[0]!.includes('qemu-system') && argv.some((a) => a.includes(text)));
}

/** Restored VMs are launched detached by the engine (they outlive it by design): end those of a run. */
export function killQemusUnder(dir: string): void {
  for (const pid of qemuPidsMentioning(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** SIGKILLs a QEMU that is not our child and waits until it is gone. */
export async function killAndWait(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  // A loaded machine can take seconds to end a killed QEMU.
  if (!(await waitForExit(pid, 30_000))) throw new Error(`QEMU pid ${pid} still runs 30 s after SIGKILL`);
}
