// Small QMP and process helpers the daemon needs around the engine: a quick
// connect that tells "nobody there" from "busy", quitting a QEMU and waiting
// until its process is gone, and cleaning up what a dead agent left in QEMU.
import fs from 'node:fs';
import os from 'node:os';
import { native } from '../native.js';
import { QmpClient } from '../qmp/client.js';
import { QmpConnectError } from '../qmp/errors.js';
import { peerPidfd, pidOfPidfd } from '../vm/process-identity.js';

/**
 * What a QMP socket showed. `absent` with `stopped`: nothing listens and the VM's owner (a VM pod's
 * launcher) says no QEMU runs, e.g. after a hibernate (afterSnapshot: Stop).
 */
export type Probe =
  | { kind: 'answers'; client: QmpClient }
  | { kind: 'absent'; message: string; stopped?: boolean }
  | { kind: 'unreachable'; message: string };

/** Connects with a short timeout. "absent": no socket or nothing listens (a stale socket). */
export async function probeQmp(socket: string, timeoutMs = 1000): Promise<Probe> {
  if (!fs.existsSync(socket)) return { kind: 'absent', message: `no QMP socket at ${socket}` };
  try {
    return { kind: 'answers', client: await QmpClient.connect(socket, { timeoutMs }) };
  } catch (err) {
    const message = (err as Error).message;
    return err instanceof QmpConnectError && err.absent ? { kind: 'absent', message } : { kind: 'unreachable', message };
  }
}

/**
 * Like probeQmp, but a QEMU that accepts the connection and does not answer yet
 * (its monitor is busy, e.g. while it loads a snapshot) is asked again until it
 * answers, goes away, or `signal` aborts.
 */
export async function probeQmpPatiently(socket: string, signal: AbortSignal, attemptMs = 5000): Promise<Probe> {
  for (;;) {
    const probe = await probeQmp(socket, attemptMs);
    if (probe.kind !== 'unreachable' || signal.aborted) return probe;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The pid of the QEMU on the other end, if the kernel tells us. */
export function peerPid(client: QmpClient): number | undefined {
  try {
    return client.peerCredentials().pid;
  } catch {
    return undefined;
  }
}

/**
 * Does any thread of the process still run? The leader turns zombie as soon as
 * it exits, while QEMU's other threads may still be exiting and holding its
 * files (and their image locks) open: the group has ended only when the leader
 * is a zombie and no other thread is left.
 */
export function processAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state !== 'Z' && state !== 'X') return true;
    return fs.readdirSync(`/proc/${pid}/task`).some((tid) => tid !== String(pid));
  } catch {
    return false;
  }
}

/** Waits until the process has exited; with its pidfd, a pid recycled meanwhile is not mistaken for it. */
export async function waitForExit(pid: number, timeoutMs: number, pidfd?: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const alive = () => (pidfd === undefined || pidOfPidfd(pidfd) === pid) && processAlive(pid);
  while (alive()) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/**
 * `quit`s the QEMU and waits until its process has exited: a QEMU removes its
 * socket file on exit, which must not happen after a new QEMU bound the same path.
 * The process is held by a pidfd from the start: SIGKILL never reaches a process
 * that got the pid after QEMU exited.
 */
export async function quitQemu(client: QmpClient, timeoutMs = 30_000): Promise<void> {
  const pid = peerPid(client);
  const pidfd = pid === undefined ? undefined : peerPidfd(client);
  try {
    await client.execute('quit').catch(() => undefined);
    await client.waitClosed(timeoutMs);
    client.close();
    if (pid === undefined) return;
    if (await waitForExit(pid, timeoutMs, pidfd)) return;
    try {
      if (pidfd !== undefined) native().pidfdSignal(pidfd, os.constants.signals.SIGKILL);
      else process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    if (!(await waitForExit(pid, 5_000, pidfd))) throw new Error(`QEMU (pid ${pid}) did not exit after quit and SIGKILL`);
  } finally {
    if (pidfd !== undefined) fs.closeSync(pidfd);
  }
}

interface FdSetInfo {
  'fdset-id': number;
  fds: Array<{ fd: number; opaque?: string }>;
}

/** fdset ids holding an fd added with `opaque` (what a save or restore left behind). */
export async function fdSetsWithOpaque(client: QmpClient, opaque: string): Promise<number[]> {
  const sets = await client.execute<FdSetInfo[]>('query-fdsets').catch(() => [] as FdSetInfo[]);
  return sets.filter((s) => s.fds.some((f) => f.opaque === opaque)).map((s) => s['fdset-id']);
}

export async function removeFdSets(client: QmpClient, opaque: string): Promise<void> {
  for (const id of await fdSetsWithOpaque(client, opaque)) {
    await client.execute('remove-fd', { 'fdset-id': id }).catch(() => undefined);
  }
}

/** One variable of a process's environment (readable by root or the same user). */
export function processEnvVar(pid: number, name: string): string | undefined {
  try {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const entry = env.find((e) => e.startsWith(`${name}=`));
    return entry?.slice(name.length + 1);
  } catch {
    return undefined;
  }
}

export function processArgv(pid: number): string[] | undefined {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (argv[argv.length - 1] === '') argv.pop();
    return argv;
  } catch {
    return undefined;
  }
}
