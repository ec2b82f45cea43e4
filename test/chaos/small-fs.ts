// A small filesystem of its own for disk-full tests: an ext4 image on a loop
// device (real O_DIRECT, real ENOSPC), or a size-limited tmpfs where loop
// devices are refused (the save then falls back to buffered I/O). Needs root.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface SmallFs {
  dir: string;
  kind: 'ext4 on a loop device' | 'tmpfs';
  unmount(): void;
}

const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

export function mountSmallFs(base: string, sizeMiB: number): SmallFs {
  const dir = path.join(base, 'mnt');
  const image = path.join(base, 'fs.img');
  fs.mkdirSync(dir, { recursive: true });
  const unmount = () => {
    try {
      run('umount', [dir]);
    } catch {
      try {
        run('umount', ['-l', dir]); // something still holds it: detach now, freed when released
      } catch {
        // not mounted
      }
    }
    fs.rmSync(image, { force: true });
  };
  let loopError: string;
  try {
    fs.closeSync(fs.openSync(image, 'w'));
    fs.truncateSync(image, sizeMiB << 20);
    run('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
    run('mount', ['-o', 'loop', image, dir]);
    return { dir, kind: 'ext4 on a loop device', unmount };
  } catch (err) {
    loopError = String((err as { stderr?: Buffer }).stderr ?? err).trim();
    fs.rmSync(image, { force: true });
  }
  try {
    run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'vmsnap-full', dir]);
    return { dir, kind: 'tmpfs', unmount };
  } catch (err) {
    const tmpfsError = String((err as { stderr?: Buffer }).stderr ?? err).trim();
    throw new Error(`cannot mount a small filesystem (needs root): loop: ${loopError}; tmpfs: ${tmpfsError}`);
  }
}
