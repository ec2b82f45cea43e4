// The launcher's control socket: newline-delimited JSON, one reply per request line, in order
// (api/vm-pod.ts). Whatever arrives is untrusted: bad lines get an error reply, never a crash.
import { chmodSync } from 'node:fs';
import net from 'node:net';
import {
  LauncherReplySchema,
  LauncherRequestSchema,
  VM_LAUNCHER_MAX_REQUEST_BYTES,
  type LauncherReply,
  type LauncherRequest,
} from '../../api/vm-pod.js';
import type { Log } from './log.js';

export type RequestHandler = (req: LauncherRequest) => Promise<LauncherReply>;

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
