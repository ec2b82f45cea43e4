// Starts a QEMU from a snapshot's recorded command line, waiting for an
// incoming migration (-incoming defer, -S) on a given QMP socket. The process
// is detached: a restored VM outlives the agent that launched it.
import { traceStep } from '../clock.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { QmpClient } from '../qmp/client.js';
import { rewriteDiskArgs, rewriteMacs, type DiskRewrite } from './disks.js';
import { openRegular, PrivateFileError } from './private-files.js';
import { VmsnapError } from '../errors.js';

/** Options that take a value and must not survive into the relaunch. */
const DROPPED_WITH_VALUE = new Set(['-incoming', '-loadvm']);
const DROPPED_FLAGS = new Set(['-S', '-daemonize']);

/**
 * The option an argument names, as QEMU reads it: `--daemonize` is
 * `-daemonize`; `-daemonize=on` is matched too (QEMU refuses it today, but a
 * deny-list must not depend on that). Undefined for a value.
 */
export function optionName(arg: string): string | undefined {
  if (!arg.startsWith('-') || arg === '-' || arg === '--') return undefined;
  return (arg.startsWith('--') ? arg.slice(1) : arg).split('=')[0];
}

/**
 * The whole environment of a relaunched QEMU: nothing of the agent's own
 * (its ServiceAccount settings, proxies, NODE_OPTIONS...) reaches a process
 * started from a tenant's command line, only a fixed PATH and the caller's
 * markers (the restore uid that lets the agent recognise its QEMU).
 */
export function relaunchEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...extra };
}

export class LaunchError extends VmsnapError {
  override name = 'LaunchError';
}

/** How a copy's command line differs from the source VM's (restoring under another name). */
export interface ArgvRewrite {
  /**
   * [from, to] directory pairs: every argument path equal to `from` or below it
   * is moved to `to` (sockets, logs, pid files, memory-backend files of the VM).
   */
  paths?: Array<[string, string]>;
  /** The new VM name for `-name` (a copy: its NICs also get MAC addresses of their own). */
  name?: string;
  /** Disk images replaced by the restored VM's own overlays (disks.ts). */
  disks?: DiskRewrite[];
}

/**
 * The recorded argv, pointed at a new QMP socket, without options that
 * conflict with a restore, plus `-S -incoming defer` (we decide when it runs).
 */
export function relaunchArgv(
  recorded: string[],
  oldQmpSocket: string,
  newQmpSocket: string,
  extra: string[] = [],
  rewrite: ArgvRewrite = {},
): string[] {
  if (recorded.length === 0) throw new LaunchError('the snapshot records no QEMU command line to launch');
  // Disks first: an overlay's path is final and must not be moved again by `paths`.
  recorded = rewriteDiskArgs(recorded, rewrite.disks ?? []);
  if (rewrite.name !== undefined) recorded = rewriteMacs(recorded, rewrite.name);
  const out: string[] = [];
  for (let i = 0; i < recorded.length; i++) {
    const arg = recorded[i]!;
    const name = i > 0 ? optionName(arg) : undefined;
    if (name !== undefined && DROPPED_WITH_VALUE.has(name)) {
      if (!arg.includes('=')) i++; // the value is the next argument
      continue;
    }
    if (name !== undefined && DROPPED_FLAGS.has(name)) continue;
    let next = oldQmpSocket === newQmpSocket ? arg : arg.split(oldQmpSocket).join(newQmpSocket);
    if (i > 0) for (const [from, to] of rewrite.paths ?? []) next = replacePath(next, from, to);
    if (rewrite.name !== undefined && i > 0 && recorded[i - 1] === '-name') next = renameVm(next, rewrite.name);
    out.push(next);
  }
  if (!out.slice(1).some((a) => a.includes(newQmpSocket))) {
    out.push('-qmp', `unix:${newQmpSocket},server=on,wait=off`);
  }
  return [...out, ...extra, '-S', '-incoming', 'defer'];
}

/** Where a path of the recorded command line lands after the rewrite's directory moves. */
export function movedPath(p: string, rewrite: ArgvRewrite = {}): string {
  let next = p;
  for (const [from, to] of rewrite.paths ?? []) next = replacePath(next, from, to);
  return next;
}

/**
 * Replaces `from` where it is a whole path: `/vms/a` matches `/vms/a`, `/vms/a/x` and
 * `path=/vms/a/x`, but not `/vms/ab` or `/old/vms/a`.
 */
function replacePath(arg: string, from: string, to: string): string {
  const dir = from.replace(/\/+$/, '');
  if (!dir) return arg;
  const escaped = dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return arg.replace(new RegExp(`(?<![^=,:; ])${escaped}(?=$|[/,:;= ])`, 'g'), () => to.replace(/\/+$/, ''));
}

/** `-name demo` or `-name guest=demo,debug-threads=on`: the name is the first (guest=) part. */
function renameVm(value: string, name: string): string {
  const [first = '', ...rest] = value.split(',');
  const renamed = first.startsWith('guest=') ? `guest=${name}` : first.includes('=') ? first : name;
  return [renamed, ...rest].join(',');
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface LaunchedQemu {
  pid: number;
  argv: string[];
  logPath: string;
  client: QmpClient;
}

export interface LaunchOptions {
  argv: string[];
  qmpSocket: string;
  cwd?: string;
  logPath?: string;
  timeoutMs?: number;
  /** Added to QEMU's otherwise fixed environment (relaunchEnv; lets the agent recognise a QEMU it launched). */
  env?: Record<string, string>;
}

/**
 * Opens QEMU's log for appending without ever writing through a name a tenant
 * planted: the log sits in the VM's directory, which the tenant can write, and
 * the agent is root. A new log is created with O_EXCL|O_NOFOLLOW; an existing
 * one is reused only when it is a plain file of the agent's with one link (a
 * previous launch's). Anything else at that name (a symlink, a hard link to a
 * host file, a FIFO, the tenant's own file) is unlinked, which removes only the
 * name, and the log is created afresh; a name planted again meanwhile fails.
 */
export function openLaunchLog(logPath: string): number {
  const { O_RDWR, O_APPEND, O_CREAT, O_EXCL, O_NOFOLLOW, O_NOCTTY } = fs.constants;
  const create = () => fs.openSync(logPath, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY, 0o644);
  try {
    return create();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new LaunchError(`cannot create the QEMU log ${logPath}: ${(err as Error).message}`);
  }
  try {
    const fd = openRegular(logPath, O_RDWR | O_APPEND);
    if (fd !== undefined) {
      const st = fs.fstatSync(fd);
      if (st.nlink === 1 && st.uid === process.geteuid!()) return fd;
      fs.closeSync(fd);
    }
  } catch (err) {
    if (!(err instanceof PrivateFileError)) throw err;
  }
  fs.rmSync(logPath, { force: true });
  try {
    return create();
  } catch (err) {
    throw new LaunchError(`cannot create the QEMU log ${logPath} (something keeps replacing it): ${(err as Error).message}`);
  }
}

/** The last lines of the log, read through the fd the launch opened (never by name again). */
function logTail(fd: number, lines = 3): string {
  const size = fs.fstatSync(fd).size;
  const len = Math.min(size, 8192);
  const buf = Buffer.alloc(len);
  fs.readSync(fd, buf, 0, len, size - len);
  return buf.toString('utf8').trim().split('\n').slice(-lines).join(' | ');
}

/** Starts QEMU and waits until its QMP socket answers. */
export async function launchQemu(opts: LaunchOptions): Promise<LaunchedQemu> {
  return (await startQemu(opts)).ready;
}

/**
 * Starts QEMU once no other QEMU holds the socket, and returns as soon as the
 * process exists: `ready` resolves once its QMP socket answers. A caller with
 * work of its own to do (a lazy restore checks the file) does it while QEMU
 * initialises instead of after.
 */
export async function startQemu(opts: LaunchOptions): Promise<{ ready: Promise<LaunchedQemu> }> {
  const { argv, qmpSocket } = opts;
  if (fs.existsSync(qmpSocket)) {
    if (await socketAnswers(qmpSocket)) {
      throw new LaunchError(`a QEMU is already running at ${qmpSocket}: stop it first, or restore to another socket`);
    }
    fs.rmSync(qmpSocket, { force: true }); // stale socket of a QEMU that exited
  }
  fs.mkdirSync(path.dirname(qmpSocket), { recursive: true });
  const logPath = opts.logPath ?? `${qmpSocket}.qemu.log`;
  const log = openLaunchLog(logPath);
  const cwd = opts.cwd && fs.existsSync(opts.cwd) ? opts.cwd : undefined;
  traceStep('spawning QEMU');
  let child;
  try {
    child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log], cwd, env: relaunchEnv(opts.env) });
  } catch (err) {
    fs.closeSync(log);
    throw err;
  }
  let exitCode: number | null | undefined;
  child.once('exit', (code, signal) => {
    exitCode = code ?? (signal ? -1 : null);
  });
  child.once('error', () => {
    exitCode = -1;
  });
  child.unref();
  const ready = (async (): Promise<LaunchedQemu> => {
    const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
    while (Date.now() < deadline) {
      if (exitCode !== undefined) {
        const tail = logTail(log);
        throw new LaunchError(`QEMU exited during launch (exit ${exitCode}): ${tail || 'no output'} (full log: ${logPath})`);
      }
      if (fs.existsSync(qmpSocket)) {
        try {
          const client = await QmpClient.connect(qmpSocket);
          traceStep('QEMU answers on QMP');
          return { pid: child.pid!, argv, logPath, client };
        } catch {
          // not listening yet
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    throw new LaunchError(`QEMU did not open its QMP socket ${qmpSocket} within ${opts.timeoutMs ?? 15_000} ms (log: ${logPath})`);
  })().finally(() => fs.closeSync(log));
  return { ready };
}
