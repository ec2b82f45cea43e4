// The two unix sockets in the run directory: clearing what a previous container left there, and
// waiting until QEMU's QMP socket accepts connections.
import { lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';

/** Resolves true when something accepts a connection on `path` (the connection is closed at once). */
export function socketAccepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.createConnection(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/**
 * Removes a socket left by an earlier container of this pod (the emptyDir outlives it). unlink
 * never follows a symlink, so a planted link removes only the link. A directory is refused, and
 * so is a socket something still listens on: that is another process's, not a leftover.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (st.isDirectory()) throw new Error(`${path} is a directory; the launcher needs that name for its socket`);
  if (st.isSocket() && (await socketAccepts(path))) throw new Error(`${path} is in use by another process (a second launcher in this pod?)`);
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

const POLL_MS = 10;

/**
 * Resolves once a connection to `path` succeeds; connects and closes, because QMP serves one
 * client at a time and the agent must be able to connect as soon as it hears back. Rejects when
 * `gone` settles first (QEMU exited) or after `timeoutMs`.
 */
export async function waitForListening(path: string, timeoutMs: number, gone: Promise<unknown>): Promise<void> {
  let exited = false;
  void gone.then(() => (exited = true));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await socketAccepts(path)) return;
    if (exited) throw new Error(`QEMU exited before its QMP socket ${path} accepted a connection`);
    if (Date.now() > deadline) throw new Error(`QEMU's QMP socket ${path} accepted no connection within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
