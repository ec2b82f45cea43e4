// The agent's side of the launcher protocol (api/vm-pod.ts): one JSON request line, one JSON
// reply line, over the launcher's socket in the VM pod. The launcher is the tenant's: replies are
// bounded in size and time and parsed with the contract's schema.
import type net from 'node:net';
import { LauncherReplySchema, type LauncherReply, type LauncherRequest } from '../../../api/vm-pod.js';
import { formatZodError } from '../../../api/index.js';
import { native } from '../native.js';
import { VmsnapError } from '../errors.js';

/** A reply line longer than this is refused (a valid one is under 200 bytes, an error under 4 KiB). */
export const LAUNCHER_REPLY_MAX_BYTES = 8 * 1024;

export class LauncherError extends VmsnapError {
  override name = 'LauncherError';
}

/** Parses one reply line (without its newline). Pure: tested without a launcher. */
export function parseLauncherReply(line: string): Extract<LauncherReply, { ok: true }> {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    throw new LauncherError(`the launcher replied with something that is not JSON: ${JSON.stringify(line.slice(0, 120))}`);
  }
  const r = LauncherReplySchema.safeParse(json);
  if (!r.success) throw new LauncherError(`the launcher's reply does not follow the protocol (api/vm-pod.ts): ${formatZodError(r.error)}`);
  if (!r.data.ok) throw new LauncherError(`the launcher refused: ${r.data.error.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 1024)}`);
  return r.data;
}

/**
 * Sends one request on a connected socket and reads one reply; the socket is destroyed afterwards.
 * `fd`: the snapshot fd of a lazy restart-incoming, sent (one byte, SCM_RIGHTS) once the launcher
 * replied `awaitingFd`; the caller keeps its own copy and closes it.
 */
export function launcherRequest(
  socket: net.Socket,
  request: LauncherRequest,
  timeoutMs: number,
  fd?: number,
): Promise<Extract<LauncherReply, { ok: true }>> {
  const wantsFd = request.op === 'restart-incoming' && request.lazy !== undefined;
  if (wantsFd !== (fd !== undefined)) return Promise.reject(new LauncherError(`'${request.op}' ${wantsFd ? 'needs' : 'takes no'} fd`));
  let fdSent = false;
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | undefined, reply?: Extract<LauncherReply, { ok: true }>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(
      () => finish(new LauncherError(`the launcher did not answer '${request.op}' within ${Math.round(timeoutMs / 1000)} s`)),
      timeoutMs,
    );
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      const line = nl >= 0 ? buf.subarray(0, nl) : buf;
      if (line.length > LAUNCHER_REPLY_MAX_BYTES) {
        finish(new LauncherError(`the launcher's reply to '${request.op}' exceeds ${LAUNCHER_REPLY_MAX_BYTES} bytes`));
        return;
      }
      if (nl < 0) return;
      buf = buf.subarray(nl + 1);
      let reply: Extract<LauncherReply, { ok: true }>;
      try {
        reply = parseLauncherReply(line.toString('utf8'));
      } catch (err) {
        finish(err as Error);
        return;
      }
      if (!reply.awaitingFd) {
        finish(undefined, reply);
        return;
      }
      if (fd === undefined || fdSent) {
        finish(new LauncherError(`the launcher asked for an fd ${fdSent ? 'twice' : `with '${request.op}'`}`));
        return;
      }
      fdSent = true;
      try {
        const sockFd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
        if (typeof sockFd !== 'number' || sockFd < 0) throw new Error('the socket has no fd');
        native().sendFds(sockFd, Buffer.from([0]), [fd]);
      } catch (err) {
        finish(new LauncherError(`sending the snapshot fd to the launcher failed: ${(err as Error).message}`));
      }
    });
    socket.on('error', (err) => finish(new LauncherError(`the launcher's socket failed during '${request.op}': ${err.message}`)));
    socket.on('close', () => finish(new LauncherError(`the launcher closed its socket without answering '${request.op}'`)));
    socket.write(JSON.stringify(request) + '\n');
  });
}
