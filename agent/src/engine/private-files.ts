// Files the agent keeps for itself under its storage root (the header key, the
// overlay ledger) and files it opens that a tenant may have planted: every
// open here refuses symlinks and anything but a regular file, and never blocks
// (a FIFO or a device named by a tenant must not stall the agent or be opened).
import fs from 'node:fs';
import path from 'node:path';
import { VmsnapError } from '../errors.js';

export class PrivateFileError extends VmsnapError {
  override name = 'PrivateFileError';
}

/** The agent's own directory under its storage root (no namespace can have this name). */
export const AGENT_PRIVATE_DIR = '.vmsnap';

/**
 * `<storageRoot>/.vmsnap`, created 0700 on first use. Namespaces are DNS labels,
 * so no snapshot directory can be called `.vmsnap`. Refused when it is a
 * symlink, someone else's or open to others: a key there would not be secret.
 */
export function agentPrivateDir(storageRoot: string): string {
  const dir = path.join(storageRoot, AGENT_PRIVATE_DIR);
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || st.uid !== process.geteuid!() || (st.mode & 0o077) !== 0) {
    throw new PrivateFileError(
      `${dir} must be a directory owned by the agent (uid ${process.geteuid!()}) with mode 0700; it is ` +
        `${st.isSymbolicLink() ? 'a symlink' : st.isDirectory() ? `owned by uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}` : 'not a directory'}: ` +
        'remove it and let the agent create it again',
    );
  }
  return dir;
}

/**
 * Where the agent keeps the log of a QEMU it launches for a VM: its own
 * directory, not the VM's (which the tenant writes). Names are Kubernetes
 * names (DNS labels and subdomains), checked so that none leaves the directory.
 */
export function agentLaunchLogPath(storageRoot: string, namespace: string, vmName: string): string {
  const name = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
  if (!name.test(namespace) || !name.test(vmName) || vmName.includes('..')) {
    throw new PrivateFileError(`${namespace}/${vmName} is not a Kubernetes namespace and name, so it names no log file`);
  }
  const dir = path.join(agentPrivateDir(storageRoot), 'logs');
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return path.join(dir, `${namespace}_${vmName}.qemu.log`);
}

/**
 * Opens `file` only if it is a regular file reached without following a symlink
 * at its last component; `flags` gets O_NOFOLLOW | O_NONBLOCK | O_NOCTTY. The
 * lstat comes first so that a device or FIFO is never opened at all; the fstat
 * after makes sure the file opened is the one looked at. Returns the fd, or
 * undefined when nothing is there (ENOENT).
 */
export function openRegular(file: string, flags: number, mode?: number): number | undefined {
  const { O_NOFOLLOW, O_NONBLOCK, O_NOCTTY, O_CREAT } = fs.constants;
  let before: fs.Stats | undefined;
  try {
    before = fs.lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (!(flags & O_CREAT)) return undefined;
  }
  if (before && !before.isFile()) throw new PrivateFileError(`${file} is ${kindOf(before)}, not a regular file: it is not opened`);
  let fd: number;
  try {
    fd = fs.openSync(file, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new PrivateFileError(`${file} is a symlink: it is not followed`);
    if (code === 'ENOENT' && !(flags & O_CREAT)) return undefined;
    throw err;
  }
  const after = fs.fstatSync(fd);
  if (!after.isFile() || (before && (before.dev !== after.dev || before.ino !== after.ino))) {
    fs.closeSync(fd);
    throw new PrivateFileError(`${file} changed while it was opened (now ${kindOf(after)}): it is not used`);
  }
  return fd;
}

export function kindOf(st: fs.Stats): string {
  if (st.isSymbolicLink()) return 'a symlink';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isDirectory()) return 'a directory';
  return st.isFile() ? 'a regular file' : 'not a regular file';
}

/** fsyncs a directory (a new name in it made durable). */
export function syncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
