// Connecting to a socket in a VM pod's run volume without trusting the volume: the socket is
// opened as an O_PATH fd beneath the pod's directory (no symlink anywhere, nothing outside it),
// the connection goes through /proc/self/fd/<fd> (that exact inode), and the process on the
// other end must be in the pod's cgroup before a byte is exchanged.
import fs from 'node:fs';
import net from 'node:net';
import { native, O_PATH, type PeerCredentials } from '../native.js';
import { QmpClient } from '../qmp/client.js';
import { cgroupBelongsToPod } from './cgroup.js';
import type { PodVmIdentity } from './identity.js';
import { readPeerProcess } from './process-identity.js';
import { podDir, socketNodePath, socketRelPath } from './run-volume.js';
import { VmsnapError } from '../errors.js';

export class PeerRefusedError extends VmsnapError {
  override name = 'PeerRefusedError';
}

export class SocketRefusedError extends VmsnapError {
  override name = 'SocketRefusedError';
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** Opens `<pod dir>/<run volume>/<socketName>` as an O_PATH fd. Throws SocketRefusedError with what is wrong. */
export function openPodSocket(kubeletRootDir: string, vm: PodVmIdentity, socketName: string): number {
  const dir = podDir(kubeletRootDir, vm.podUid);
  const rel = socketRelPath(socketName);
  let fd: number;
  try {
    // No O_NOFOLLOW: with it, O_PATH would open a trailing symlink itself instead of failing with ELOOP.
    fd = native().openBeneath(dir, rel, O_PATH);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = `${socketName} of VM ${vm.namespace}/${vm.name} (pod ${vm.podName}, ${dir}/${rel})`;
    const why =
      code === 'ENOENT'
        ? 'it does not exist (is the VM pod running the vmsnap launcher with its run volume?)'
        : code === 'ELOOP'
          ? 'a symlink is in its path, and sockets in a VM pod are never reached through symlinks'
          : code === 'EXDEV'
            ? 'its path leaves the pod directory'
            : (err as Error).message;
    throw new SocketRefusedError(`refused ${where}: ${why}`, code);
  }
  try {
    if (!fs.fstatSync(fd).isSocket()) {
      throw new SocketRefusedError(`refused ${socketName} of VM ${vm.namespace}/${vm.name} (pod ${vm.podName}): it is not a unix socket`, 'ENOTSOCK');
    }
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return fd;
}

const CGROUP_MAX_BYTES = 64 * 1024;

function readSmall(file: string, max: number): string {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const buf = Buffer.alloc(max);
    let n = 0;
    for (let r; n < max && (r = fs.readSync(fd, buf, n, max - n, null)) > 0; ) n += r;
    return buf.subarray(0, n).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Throws PeerRefusedError unless the peer process is in the pod's cgroup. The cgroup is read
 * from /proc/<pid> of that very process (a pidfd from the socket proves the pid was not recycled).
 */
export function verifyPodPeer(peer: PeerCredentials, vm: PodVmIdentity, what: string, socketFd: number): void {
  const where = `the ${what} of VM ${vm.namespace}/${vm.name} (pod ${vm.podName})`;
  if (!(peer.pid > 0)) {
    throw new PeerRefusedError(`refused ${where}: the kernel does not show the peer's process (run the agent with hostPID, as the chart does)`);
  }
  let text: string;
  try {
    text = readPeerProcess(socketFd, peer.pid, (pid) => readSmall(`/proc/${pid}/cgroup`, CGROUP_MAX_BYTES));
  } catch (err) {
    throw new PeerRefusedError(`refused ${where}: cannot read /proc/${peer.pid}/cgroup of its peer: ${(err as Error).message}`);
  }
  const verdict = cgroupBelongsToPod(text, vm.podUid);
  if (!verdict.ok) {
    throw new PeerRefusedError(
      `refused ${where}: the process listening on it (pid ${peer.pid}) does not belong to the pod: ${verdict.reason}; ` +
        'only the pod itself may serve its sockets',
    );
  }
}

/** QMP of a pod VM: opened beneath the pod directory, peer checked before the greeting is read. */
export async function connectPodQmp(kubeletRootDir: string, vm: PodVmIdentity, socketName: string, timeoutMs?: number): Promise<QmpClient> {
  const fd = openPodSocket(kubeletRootDir, vm, socketName);
  try {
    return await QmpClient.connect(`/proc/self/fd/${fd}`, {
      timeoutMs,
      name: socketNodePath(kubeletRootDir, vm.podUid, socketName),
      verifyPeer: (peer, socketFd) => verifyPodPeer(peer, vm, `QMP socket ${socketName}`, socketFd),
    });
  } finally {
    fs.closeSync(fd);
  }
}

/** A plain stream connection (the launcher's control socket), peer checked. */
export async function connectPodStream(kubeletRootDir: string, vm: PodVmIdentity, socketName: string, timeoutMs: number): Promise<net.Socket> {
  const fd = openPodSocket(kubeletRootDir, vm, socketName);
  try {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(`/proc/self/fd/${fd}`);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`connecting to ${socketName} of VM ${vm.namespace}/${vm.name} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new SocketRefusedError(`cannot connect to ${socketName} of VM ${vm.namespace}/${vm.name} (pod ${vm.podName}): ${err.message}`, err.code));
      });
    });
    try {
      const sfd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (typeof sfd !== 'number' || sfd < 0) throw new PeerRefusedError(`the connection to ${socketName} has no file descriptor`);
      verifyPodPeer(native().peerCredentials(sfd), vm, `socket ${socketName}`, sfd);
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return socket;
  } finally {
    fs.closeSync(fd);
  }
}
