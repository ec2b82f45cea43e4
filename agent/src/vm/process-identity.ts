// A process by identity, not by pid: the kernel hands a freed pid to the next process that needs
// one, so "the QEMU with pid 1234" may be someone else's process a moment later. A process is
// its pid plus its start time (/proc/<pid>/stat field 22, clock ticks after boot: a recycled pid
// always starts later), or a pidfd, which names that one process for as long as it is open.
import fs from 'node:fs';
import { native } from '../native.js';
import { VmsnapError } from '../errors.js';

export interface ProcessIdentity {
  pid: number;
  /** /proc/<pid>/stat field 22 (starttime). */
  startTicks: number;
}

/** The state letter and start time in a /proc/<pid>/stat text (comm may hold spaces and parentheses). Pure. */
export function parseProcStat(text: string): { state: string; startTicks: number } {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error('not a /proc/<pid>/stat text');
  // After "pid (comm) ": field 3 (state) is the first; starttime is field 22, the 20th after comm.
  const fields = text.slice(close + 2).trim().split(/\s+/);
  const startTicks = Number(fields[19]);
  if (!fields[0] || !Number.isSafeInteger(startTicks)) throw new Error('a /proc/<pid>/stat text without state or starttime');
  return { state: fields[0], startTicks };
}

/** The process that has `pid` now, or undefined when none has. */
export function processIdentity(pid: number): ProcessIdentity | undefined {
  if (!(Number.isInteger(pid) && pid > 0)) return undefined;
  try {
    return { pid, startTicks: parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8')).startTicks };
  } catch {
    return undefined;
  }
}

/**
 * Is `now` the process that was recorded? Without a recorded start time (a header written before
 * it was recorded) only the pid can be compared. Pure.
 */
export function sameProcess(recorded: { pid: number; startTicks?: number }, now: ProcessIdentity | undefined): boolean {
  if (!now || now.pid !== recorded.pid) return false;
  return recorded.startTicks === undefined || recorded.startTicks === now.startTicks;
}

/** The pid a pidfd's process has now (/proc/self/fdinfo), or undefined once it exited and was reaped. */
export function pidOfPidfd(pidfd: number): number | undefined {
  try {
    const m = /^Pid:\s*(-?\d+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8'));
    const pid = m ? Number(m[1]) : -1;
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads something about the process on the other end of a unix socket through /proc/<pid>,
 * knowing it was that process: a pidfd (SO_PEERPIDFD) still names `pid` after the read, so the
 * pid was not recycled meanwhile. Kernels without SO_PEERPIDFD (before 6.5): the start time read
 * before and after must match. Throws when the peer is gone or its pid changed hands.
 */
export function readPeerProcess<T>(socketFd: number, pid: number, read: (pid: number) => T): T {
  let pidfd: number | undefined;
  try {
    pidfd = native().peerPidfd(socketFd);
  } catch {
    pidfd = undefined;
  }
  const still = pidfd !== undefined ? () => pidOfPidfd(pidfd!) === pid : startedAs(processIdentity(pid));
  try {
    if (!still()) throw new PeerGoneError(`the process that opened the socket (pid ${pid}) has exited`);
    const value = read(pid);
    if (!still()) throw new PeerGoneError(`the process that opened the socket (pid ${pid}) exited while it was checked`);
    return value;
  } finally {
    if (pidfd !== undefined) fs.closeSync(pidfd);
  }
}

export class PeerGoneError extends VmsnapError {
  override name = 'PeerGoneError';
}

function startedAs(first: ProcessIdentity | undefined): () => boolean {
  return () => first !== undefined && sameProcess(first, processIdentity(first.pid));
}

/** A socket connection that knows its peer (a QmpClient). */
export interface PeerSocket {
  peerCredentials(): { pid: number };
  socketFd(): number;
}

/** The process on the other end of `conn`, by identity; undefined when the kernel does not say or it is gone. */
export function peerIdentity(conn: PeerSocket): ProcessIdentity | undefined {
  try {
    const { pid } = conn.peerCredentials();
    return readPeerProcess(conn.socketFd(), pid, (p) => processIdentity(p));
  } catch {
    return undefined;
  }
}

/** A pidfd for the peer of `conn` (closed by the caller), or undefined when the kernel cannot give one. */
export function peerPidfd(conn: PeerSocket): number | undefined {
  try {
    return native().peerPidfd(conn.socketFd());
  } catch {
    return undefined;
  }
}
