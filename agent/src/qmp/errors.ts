// QMP failures, each with a message that tells the user what happened and what to do, and the
// facts callers decide on as typed fields (QMP's error class, the connect errno code).
import { VmsnapError } from '../errors.js';

export class QmpError extends VmsnapError {
  override name = 'QmpError';
}

/** QEMU answered a command with {"error": {...}}. */
export class QmpCommandError extends QmpError {
  override name = 'QmpCommandError';
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QEMU refused '${command}': ${desc}`);
  }
}

/** The socket closed (QEMU exited or crashed) while commands were waiting for answers. */
export class QmpDisconnectedError extends QmpError {
  override name = 'QmpDisconnectedError';
}

/** QEMU answered, but not with what the command returns (a misbehaving or incompatible QEMU). */
export class QmpReplyError extends QmpError {
  override name = 'QmpReplyError';
  constructor(
    readonly command: string,
    problem: string,
  ) {
    super(`QEMU sent an unexpected reply to '${command}': ${problem} (a misbehaving or incompatible QEMU)`);
  }
}

export class QmpTimeoutError extends QmpError {
  override name = 'QmpTimeoutError';
}

/** Connecting to the QMP socket failed; `code` is the socket's errno code (ENOENT: no socket, ECONNREFUSED: nobody listens). */
export class QmpConnectError extends QmpError {
  override name = 'QmpConnectError';
  readonly code: string | undefined;
  constructor(socketPath: string, err: NodeJS.ErrnoException) {
    super(describeConnectError(socketPath, err), { cause: err });
    this.code = err.code;
  }

  /** Nothing listens on the socket (a stale socket file: its QEMU has exited). */
  get nobodyListens(): boolean {
    return this.code === 'ECONNREFUSED';
  }

  /** No QEMU there: no socket file, or nothing listens on it. */
  get absent(): boolean {
    return this.code === 'ENOENT' || this.nobodyListens;
  }
}

/** Turns a socket connect error into a sentence about the QMP socket. */
export function describeConnectError(socketPath: string, err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOENT':
      return `no QMP socket at ${socketPath}: is QEMU running with -qmp unix:${socketPath},server=on,wait=off?`;
    case 'ECONNREFUSED':
      return `nothing listens on the QMP socket ${socketPath}: QEMU has exited and left a stale socket file`;
    case 'EACCES':
    case 'EPERM':
      return `no permission to open the QMP socket ${socketPath}: run as QEMU's user or root`;
    case 'ENOTSOCK':
      return `${socketPath} is not a unix socket: pass the path of QEMU's QMP socket`;
    default:
      return `cannot connect to the QMP socket ${socketPath}: ${err.message}`;
  }
}
