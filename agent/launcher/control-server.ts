// The launcher's control socket: newline-delimited JSON, one reply per request line, in order
// (api/vm-pod.ts). Whatever arrives is untrusted: bad lines get an error reply, never a crash.
import { chmodSync, closeSync } from 'node:fs';
import { native } from '../src/native.js';
import net from 'node:net';
import {
  LauncherReplySchema,
  LauncherRequestSchema,
  VM_LAUNCHER_MAX_REQUEST_BYTES,
  type LauncherReply,
  type LauncherRequest,
} from '../../api/vm-pod.js';
import type { Log } from './log.js';

/**
 * `fd`: with a lazy restart-incoming, the snapshot fd the client sent; the handler owns it (closes
 * it whatever happens).
 */
export type RequestHandler = (req: LauncherRequest, fd?: number) => Promise<LauncherReply>;

/** How long the launcher waits for the fd after replying `awaitingFd`. */
export const FD_WAIT_MS = 10_000;
const FD_POLL_MS = 5;

/** libuv's handle under a net.Socket: its fd, and reading on and off (Node has no public API for either). */
interface PipeHandle {
  fd: number;
  readStop(): number;
  readStart(): number;
}

function pipeHandle(sock: net.Socket): PipeHandle | undefined {
  const h = (sock as unknown as { _handle?: Partial<PipeHandle> | null })._handle;
  return h && typeof h.fd === 'number' && h.fd >= 0 && typeof h.readStop === 'function' && typeof h.readStart === 'function' ? (h as PipeHandle) : undefined;
}

function closeFds(fds: number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      /* gone */
    }
  }
}

/**
 * Waits for the one byte carrying the snapshot fd (SCM_RIGHTS). libuv must not read the socket
 * meanwhile: a plain read() drops passed fds, so reading was stopped before `awaitingFd` went out.
 * Polls a non-blocking recvmsg, so `status` on other connections keeps being answered.
 */
async function receiveFd(handle: PipeHandle): Promise<number> {
  const deadline = Date.now() + FD_WAIT_MS;
  for (;;) {
    const got = native().recvFds(handle.fd, 1);
    if (got !== null) {
      if (got.data.length === 0) {
        closeFds(got.fds);
        throw new Error('the client hung up instead of sending the snapshot fd');
      }
      if (got.fds.length !== 1) {
        closeFds(got.fds);
        throw new Error(`expected one fd with the byte after awaitingFd, got ${got.fds.length}`);
      }
      return got.fds[0]!;
    }
    if (Date.now() > deadline) throw new Error(`no snapshot fd arrived within ${FD_WAIT_MS / 1000} s of awaitingFd`);
    await new Promise((r) => setTimeout(r, FD_POLL_MS));
  }
}

/** At most this many clients at once: the agent needs one; more is someone misbehaving. */
const MAX_CONNECTIONS = 8;
const MAX_ERROR_CHARS = 4096;

function errorReply(message: string): LauncherReply {
  return { ok: false, error: message.slice(0, MAX_ERROR_CHARS) };
}

/** Pure: a request line parsed, or the error reply it gets without reaching the handler. */
export function parseRequestLine(line: string): { request: LauncherRequest } | { reply: LauncherReply } {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { reply: errorReply('request is not JSON: send one JSON object per line, e.g. {"op":"status"}') };
  }
  const parsed = LauncherRequestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? ` at ${issue.path.join('.')}` : '';
    return { reply: errorReply(`bad request${where}: ${issue?.message ?? 'invalid'} (ops: status, restart-incoming, start)`) };
  }
  return { request: parsed.data };
}

/** The status fields of a reply, for the interim `awaitingFd` one. */
function handleStatusOf(r: LauncherReply): Extract<LauncherReply, { ok: true }> {
  return r.ok ? r : { ok: true, state: 'stopped', generation: 0 };
}

async function answer(line: string, handle: RequestHandler): Promise<LauncherReply> {
  const parsed = parseRequestLine(line);
  if ('reply' in parsed) return parsed.reply;
  try {
    return LauncherReplySchema.parse(await handle(parsed.request));
  } catch (err) {
    return errorReply(`${parsed.request.op} failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function serve(sock: net.Socket, handle: RequestHandler, log: Log): void {
  let buffered = '';
  // One request at a time per connection keeps the replies in request order.
  let chain: Promise<void> = Promise.resolve();
  const send = (reply: LauncherReply) => {
    if (!sock.destroyed && sock.writable) sock.write(JSON.stringify(reply) + '\n');
  };
  sock.setEncoding('utf8');
  sock.on('error', () => sock.destroy()); // a client that went away (EPIPE, ECONNRESET)
  sock.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).replace(/\r$/, '');
      buffered = buffered.slice(nl + 1);
      if (Buffer.byteLength(line) > VM_LAUNCHER_MAX_REQUEST_BYTES) {
        tooLong();
        return;
      }
      if (line.trim() === '') continue;
      const parsed = parseRequestLine(line);
      if ('request' in parsed && parsed.request.op === 'restart-incoming' && parsed.request.lazy) {
        lazyRestart(parsed.request);
        return;
      }
      chain = chain.then(async () => send(await answer(line, handle)));
    }
    if (Buffer.byteLength(buffered) > VM_LAUNCHER_MAX_REQUEST_BYTES) tooLong();
  });
  // A client may send its last request without a newline and shut its side (`nc -N`): answer
  // that line too, then close ours once every reply is out.
  sock.on('end', () => {
    const last = buffered.trim();
    buffered = '';
    if (last !== '') chain = chain.then(async () => send(await answer(last, handle)));
    chain = chain.then(() => {
      sock.end();
    });
  });
  // A lazy restart: reading stops now (the fd byte must reach recvmsg, not libuv's read), the
  // interim reply goes out in order, the fd is received, then the restart runs and the
  // connection ends after its reply: one lazy restart per connection.
  function lazyRestart(request: LauncherRequest): void {
    const pipe = pipeHandle(sock);
    const early = buffered;
    buffered = '';
    sock.removeAllListeners('data');
    sock.removeAllListeners('end');
    if (pipe) pipe.readStop();
    // Reading stays off, so the client's end is never seen: with allowHalfOpen the socket would
    // linger after ours; it is destroyed once the last reply is written.
    const hangUp = () => sock.end(() => sock.destroy());
    chain = chain.then(async () => {
      if (!pipe || early !== '') {
        send(errorReply(pipe ? 'nothing may follow a lazy restart-incoming line before the awaitingFd reply' : 'cannot receive an fd on this connection'));
        hangUp();
        return;
      }
      send({ ...handleStatusOf(await status()), awaitingFd: true });
      let fd: number;
      try {
        fd = await receiveFd(pipe);
      } catch (err) {
        send(errorReply(`restart-incoming failed: ${(err as Error).message}`));
        hangUp();
        return;
      }
      let reply: LauncherReply;
      try {
        reply = LauncherReplySchema.parse(await handle(request, fd));
      } catch (err) {
        reply = errorReply(`restart-incoming failed: ${err instanceof Error ? err.message : String(err)}`);
      }
      send(reply);
      hangUp();
    });
  }
  async function status(): Promise<LauncherReply> {
    return handle({ op: 'status' }).catch((err: unknown) => errorReply(String(err)));
  }

  // The stream cannot be resynchronised inside an over-long line: answer, then hang up.
  function tooLong(): void {
    buffered = '';
    sock.pause();
    log('warn', 'control-request-too-long', { maxBytes: VM_LAUNCHER_MAX_REQUEST_BYTES });
    chain = chain.then(() => {
      send(errorReply(`request line longer than ${VM_LAUNCHER_MAX_REQUEST_BYTES} bytes; closing the connection`));
      sock.end();
    });
  }
}

/** Listens on `path` (mode 0600; remove a stale socket first) and resolves once listening. */
export function startControlServer(path: string, handle: RequestHandler, log: Log): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (sock) => serve(sock, handle, log));
  server.maxConnections = MAX_CONNECTIONS;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    // The socket is born 0600 (no window in which another user of the pod could connect); the
    // umask is process-wide, so it is put back right away: QEMU's own files keep the pod's umask.
    const umask = process.umask(0o177);
    try {
      server.listen(path, () => {
        server.off('error', reject);
        server.on('error', (err) => log('error', 'control-socket-error', { error: err.message }));
        chmodSync(path, 0o600);
        resolve(server);
      });
    } finally {
      process.umask(umask);
    }
  });
}
