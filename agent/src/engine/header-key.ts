// The node's header key: 32 random bytes the agent creates on first use in its
// private directory under the storage root. Every header (and stream
// structure) the agent writes carries an HMAC under it (snapshot-file/header.ts);
// a tenant never sees it, so a header their QEMU rewrote, or one copied from a
// file of another node, fails the check. Losing the key only makes the node's
// existing files untrusted (refused by the agent; the CLI still reads them).
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { agentPrivateDir, openRegular, PrivateFileError, syncDir } from './private-files.js';

export const HEADER_KEY_BYTES = 32;
export const HEADER_KEY_FILE = 'header.key';

const cache = new Map<string, Buffer>();

/** The key file's path for a storage root (what the daemon uses; see README). */
export function headerKeyPath(storageRoot: string): string {
  return path.join(storageRoot, '.vmsnap', HEADER_KEY_FILE);
}

/** Reads the node's key, creating it (0600, O_EXCL|O_NOFOLLOW, then linked into place) the first time. */
export function nodeHeaderKey(storageRoot: string): Buffer {
  const cached = cache.get(storageRoot);
  if (cached) return cached;
  const dir = agentPrivateDir(storageRoot);
  const file = path.join(dir, HEADER_KEY_FILE);
  const key = readKey(file) ?? createKey(dir, file);
  cache.set(storageRoot, key);
  return key;
}

function readKey(file: string): Buffer | undefined {
  const fd = openRegular(file, fs.constants.O_RDONLY);
  if (fd === undefined) return undefined;
  try {
    const st = fs.fstatSync(fd);
    if (st.uid !== process.geteuid!() || (st.mode & 0o077) !== 0 || st.size !== HEADER_KEY_BYTES) {
      throw new PrivateFileError(
        `the header key ${file} must be ${HEADER_KEY_BYTES} bytes, owned by the agent with mode 0600 ` +
          `(it is ${st.size} bytes, uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}): ` +
          'if it was tampered with, remove it; the agent makes a new one and the snapshots signed with the old one are refused',
      );
    }
    const key = Buffer.alloc(HEADER_KEY_BYTES);
    if (fs.readSync(fd, key, 0, key.length, 0) !== key.length) throw new PrivateFileError(`the header key ${file} could not be read whole`);
    return key;
  } finally {
    fs.closeSync(fd);
  }
}

function createKey(dir: string, file: string): Buffer {
  const key = randomBytes(HEADER_KEY_BYTES);
  const tmp = path.join(dir, `.${HEADER_KEY_FILE}.${randomBytes(6).toString('hex')}`);
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
  const fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    fs.writeSync(fd, key);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    // link, not rename: a key another agent process made first wins, and the file appears only whole.
    fs.linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    fs.rmSync(tmp, { force: true });
    return readKey(file)!;
  }
  fs.rmSync(tmp, { force: true });
  syncDir(dir);
  return key;
}
