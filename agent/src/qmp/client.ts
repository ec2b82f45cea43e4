// A QMP client over a unix socket: greeting and capability negotiation,
// request ids, events, per-command timeouts, fd passing with the command
// (SCM_RIGHTS, for add-fd) and a clean failure when QEMU goes away.
import { traceStep } from '../clock.js';
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { native, type PeerCredentials } from '../native.js';
import {
  QmpCommandError,
  QmpDisconnectedError,
  QmpError,
  QmpReplyError,
  QmpTimeoutError,
  QmpConnectError,
} from './errors.js';
import { replyProblem } from './replies.js';

export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
  package: string;
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface ExecuteOptions {
  timeoutMs?: number;
  /** File descriptors sent with this command (SCM_RIGHTS), as add-fd and getfd expect. */
  fds?: number[];
}

interface Pending {
  command: string;
  args: Record<string, unknown>;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** Lines longer than this are not QMP: refuse them instead of growing a buffer without bound. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

export function formatQemuVersion(v: QemuVersion): string {
  return `${v.major}.${v.minor}.${v.micro}${v.package ? ` (${v.package.trim()})` : ''}`;
}

export class QmpClient extends EventEmitter {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedError: Error | undefined;
  version!: QemuVersion;
  capabilities: string[] = [];
  /** Bytes of commands sent: QEMU reads them, which a restore's stall watch must not count as loading. */
  sentBytes = 0;

  private constructor(
    readonly socketPath: string,
    private readonly socket: net.Socket,
  ) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      this.fail(
        new QmpDisconnectedError(
          err.code === 'ECONNRESET' || err.code === 'EPIPE'
            ? `QEMU closed its QMP socket ${socketPath} (the QEMU process exited or crashed)`
            : `QMP socket ${socketPath} failed: ${err.message}`,
        ),
      ),
    );
    socket.on('close', () =>
      this.fail(new QmpDisconnectedError(`QEMU closed its QMP socket ${socketPath} (the QEMU process exited or crashed)`)),
    );
  }

  /**
   * Connects, reads the greeting and leaves capability negotiation mode. `name` is the socket as
   * messages show it (when socketPath is a /proc/self/fd link); `verifyPeer` sees the peer's
   * credentials before a byte is read and throws to refuse it.
   */
  static async connect(
    socketPath: string,
    opts: { timeoutMs?: number; name?: string; verifyPeer?: (peer: PeerCredentials, socketFd: number) => void } = {},
  ): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const name = opts.name ?? socketPath;
    const socket = await connectSocket(socketPath, name, Date.now() + timeoutMs);
    const client = new QmpClient(name, socket);
    try {
      opts.verifyPeer?.(client.peerCredentials(), client.socketFd());
      const greeting = await client.waitForGreeting(timeoutMs);
      traceStep('QMP greeting (QEMU may still be initialising)');
      client.version = greeting.version;
      client.capabilities = greeting.capabilities;
      await client.execute('qmp_capabilities', {}, { timeoutMs });
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  private greetingWaiter: ((g: { version: QemuVersion; capabilities: string[] }) => void) | undefined;

  private waitForGreeting(timeoutMs: number): Promise<{ version: QemuVersion; capabilities: string[] }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.greetingWaiter = undefined;
        reject(
          new QmpTimeoutError(
            `the QMP socket ${this.socketPath} accepted the connection but sent no greeting within ${timeoutMs} ms: ` +
              `another client may hold QEMU's monitor (QMP serves one client at a time)`,
          ),
        );
      }, timeoutMs);
      const onClose = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      this.once('closed', onClose);
      this.greetingWaiter = (g) => {
        clearTimeout(timer);
        this.off('closed', onClose);
        resolve(g);
      };
    });
  }

  /** Which process is on the other end of the socket (the QEMU we talk to). */
  peerCredentials(): PeerCredentials {
    return native().peerCredentials(this.socketFd());
  }

  /** The connection's fd (for SO_PEERPIDFD); owned by the client. */
  socketFd(): number {
    const fd = (this.socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) throw new QmpError('the QMP socket has no file descriptor (closed?)');
    return fd;
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  async execute<T = unknown>(command: string, args: Record<string, unknown> = {}, opts: ExecuteOptions = {}): Promise<T> {
    if (this.closedError) throw this.closedError;
    const id = `vmsnap-${this.nextId++}`;
    const message: Record<string, unknown> = { execute: command, id };
    if (Object.keys(args).length > 0) message.arguments = args;
    const line = JSON.stringify(message) + '\n';
    this.sentBytes += Buffer.byteLength(line);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const result = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpTimeoutError(`QEMU did not answer '${command}' within ${timeoutMs} ms (QEMU hung or overloaded)`));
      }, timeoutMs);
      this.pending.set(id, { command, args, resolve: resolve as (v: unknown) => void, reject, timer });
    });
    if (opts.fds && opts.fds.length > 0) {
      // The fds must arrive with this command's bytes; libuv must not hold
      // earlier bytes back, or QEMU would attach the fds to the wrong command.
      if (this.socket.writableLength > 0) await new Promise((r) => this.socket.once('drain', r));
      try {
        native().sendFds(this.socketFd(), Buffer.from(line, 'utf8'), opts.fds);
      } catch (err) {
        this.settle(id, undefined, new QmpError(`cannot pass file descriptors to QEMU: ${(err as Error).message}`));
      }
    } else {
      this.socket.write(line);
    }
    return result;
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    // Look for a line end only in the new bytes: scanning the whole buffer on every chunk is
    // quadratic, and a QEMU that sends one endless line would keep the agent busy for seconds.
    if (!chunk.includes('\n')) {
      if (this.buffer.length > MAX_LINE_BYTES) this.protocolError(`a QMP message exceeded ${MAX_LINE_BYTES} bytes`);
      return;
    }
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line) this.onLine(line);
    }
    if (this.buffer.length > MAX_LINE_BYTES) {
      this.protocolError(`a QMP message exceeded ${MAX_LINE_BYTES} bytes`);
    }
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.protocolError(`QEMU sent a line that is not JSON: ${line.slice(0, 200)}`);
      return;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      this.protocolError(`QEMU sent a QMP message that is not an object: ${line.slice(0, 200)}`);
      return;
    }
    const m = msg as Record<string, unknown>;
    if ('QMP' in m) {
      const qmp = m.QMP as { version?: { qemu?: Partial<QemuVersion>; package?: string }; capabilities?: unknown } | null;
      const v = qmp?.version?.qemu;
      const version: QemuVersion = {
        major: Number(v?.major ?? 0),
        minor: Number(v?.minor ?? 0),
        micro: Number(v?.micro ?? 0),
        package: String(qmp?.version?.package ?? ''),
      };
      const capabilities = Array.isArray(qmp?.capabilities) ? qmp.capabilities.map(String) : [];
      this.greetingWaiter?.({ version, capabilities });
      this.greetingWaiter = undefined;
      return;
    }
    if (typeof m.event === 'string') {
      this.emit('event', m as unknown as QmpEvent);
      return;
    }
    const id = typeof m.id === 'string' ? m.id : undefined;
    if (!id || !this.pending.has(id)) return; // an answer to a command that timed out, or not ours
    if ('error' in m) {
      const e = (m.error ?? {}) as { class?: unknown; desc?: unknown };
      const pending = this.pending.get(id)!;
      this.settle(id, undefined, new QmpCommandError(pending.command, String(e.class ?? 'GenericError'), String(e.desc ?? 'unknown error')));
    } else {
      const { command, args } = this.pending.get(id)!;
      const problem = 'return' in m ? replyProblem(command, m.return, args) : "it has neither 'return' nor 'error'";
      this.settle(id, m.return, problem ? new QmpReplyError(command, problem) : undefined);
    }
  }

  private settle(id: string, value: unknown, err: Error | undefined): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    traceStep(`QMP ${pending.command} answered`);
    clearTimeout(pending.timer);
    if (err) pending.reject(err);
    else pending.resolve(value);
  }

  private protocolError(message: string): void {
    this.fail(new QmpError(`QMP protocol error on ${this.socketPath}: ${message}`));
    this.socket.destroy();
  }

  private fail(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new QmpDisconnectedError(`${err.message} while waiting for the answer to '${p.command}'`));
    }
    this.emit('closed', err);
  }

  /** Resolves when the socket closes (QEMU exited, or we closed it). */
  waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.closedError) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.once('closed', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  close(): void {
    this.fail(new QmpDisconnectedError(`the QMP connection to ${this.socketPath} was closed by vmsnap`));
    this.socket.destroy();
  }
}

/** How often a connect that met QEMU's full listen backlog is tried again. */
const BACKLOG_RETRY_MS = 20;

/**
 * Connects to the unix socket. QEMU listens for QMP with a backlog of one and serves one client at
 * a time, so a connect right after another client's can find the backlog full (EAGAIN): that is
 * tried again until `deadline`; every other error fails at once.
 */
async function connectSocket(socketPath: string, name: string, deadline: number): Promise<net.Socket> {
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.createConnection(socketPath);
        s.once('connect', () => {
          s.removeAllListeners('error');
          resolve(s);
        });
        s.once('error', (err: NodeJS.ErrnoException) => reject(new QmpConnectError(name, err)));
      });
    } catch (err) {
      if (!(err instanceof QmpConnectError) || err.code !== 'EAGAIN' || Date.now() + BACKLOG_RETRY_MS > deadline) throw err;
      await new Promise((r) => setTimeout(r, BACKLOG_RETRY_MS));
    }
  }
}
