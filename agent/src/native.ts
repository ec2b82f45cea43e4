// Loads the N-API addon (agent/native) that makes the syscalls Node
// cannot: SCM_RIGHTS fd passing, SO_PEERCRED, an aligned O_DIRECT probe and
// posix_fadvise (a lazy restore's prefetch), openat2 beneath a directory
// (paths inside a tenant's volume, never following a symlink), pidfds, and SEEK_DATA/SEEK_HOLE
// (the data regions of a sparse snapshot, for an upload).
import { createRequire } from 'node:module';
import { packageRoot } from './package-root.js';
import path from 'node:path';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

interface NativeAddon {
  sendFds(socketFd: number, data: Buffer, fds: number[]): number;
  /**
   * One non-blocking recvmsg (MSG_CMSG_CLOEXEC) on a socket libuv no longer reads: the bytes and
   * any fds that came with them, or null when nothing is there yet. The caller owns the fds.
   */
  recvFds(socketFd: number, maxBytes: number): { data: Buffer; fds: number[] } | null;
  peerCredentials(socketFd: number): PeerCredentials;
  probeDirectIO(dir: string): string | null;
  fadviseWillNeed(fd: number, offset: number, length: number): void;
  /** posix_fadvise DONTNEED: drops the range's clean pages from the page cache (length 0: to the end). */
  fadviseDontNeed(fd: number, offset: number, length: number): void;
  /**
   * openat2(dir, relPath, flags | O_CLOEXEC) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
   * RESOLVE_NO_MAGICLINKS: fails (ELOOP, EXDEV) when any component is a symlink or the path
   * leaves dir. `dir` is an fd or a path the caller trusts. Read-only flags only (O_PATH,
   * O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_CLOEXEC). Returns the new fd; the caller closes it.
   */
  openBeneath(dir: number | string, relPath: string, flags: number): number;
  /** A pidfd for the very process on the other end of a unix socket (SO_PEERPIDFD); the caller closes it. */
  peerPidfd(socketFd: number): number;
  /** pidfd_send_signal: that process only; ESRCH once it has exited. */
  pidfdSignal(pidfd: number, signal: number): void;
  /** The file's data regions (SEEK_DATA/SEEK_HOLE) as a flat [offset, length, ...] list. */
  dataExtents(fd: number): number[];
}

/** O_PATH (not in node's fs.constants). */
export const O_PATH = 0o10000000;

let addon: NativeAddon | undefined;

export function native(): NativeAddon {
  if (!addon) {
    const file = path.join(packageRoot(), 'agent/native/build/Release/vmsnap_native.node');
    try {
      addon = createRequire(import.meta.url)(file) as NativeAddon;
    } catch (err) {
      throw new Error(
        `the vmsnap native addon is not built (${file}): run \`npm install\` (it builds with node-gyp); cause: ${(err as Error).message}`,
      );
    }
  }
  return addon;
}
