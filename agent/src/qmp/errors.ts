// QMP failures, each with a message that tells the user what happened and what to do.

export class QmpError extends Error {
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
