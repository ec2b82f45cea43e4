// Errors that carry why they happened as a code, set where they arise. Callers decide on `reason`
// (and on a subclass's typed fields, such as a QMP error's class or a socket error's errno code),
// never on the message: the message is for people.
import { Reason } from '../../api/protocol.js';

export class VmsnapError extends Error {
  override name = 'VmsnapError';
  /** The status reason (the Ready condition's) of an operation this error ends: one of the API's closed set. */
  readonly reason: Reason;

  constructor(message: string, opts: { reason?: Reason; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.reason = opts.reason ?? Reason.Failed;
  }
}

/** The status reason an error gives: its own when it carries one, Failed for anything else. */
export function reasonOf(err: unknown): Reason {
  return err instanceof VmsnapError ? err.reason : Reason.Failed;
}
