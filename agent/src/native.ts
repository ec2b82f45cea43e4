// Loads the N-API addon (agent/native) that makes the syscalls Node
// cannot: SCM_RIGHTS fd passing, SO_PEERCRED, an aligned O_DIRECT probe and
// posix_fadvise (a lazy restore's prefetch).
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
  peerCredentials(socketFd: number): PeerCredentials;
  probeDirectIO(dir: string): string | null;
  fadviseWillNeed(fd: number, offset: number, length: number): void;
}

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
