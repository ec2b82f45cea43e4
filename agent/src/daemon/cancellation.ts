// Why running work is stopped, carried as the AbortSignal's reason so that the
// engine rethrows it and the runner reports the right phase and message.
import { Reason } from '../../../api/index.js';
import { VmsnapError } from '../errors.js';

export type CancelCause = 'deleted' | 'failed' | 'shutdown';

export class Cancellation extends VmsnapError {
  override name = 'Cancellation';
  constructor(
    readonly kind: CancelCause,
    /** The condition reason to report. */
    reason: Reason,
    message: string,
  ) {
    super(message, { reason });
  }
}

export function deletedCancellation(kind: string): Cancellation {
  return new Cancellation('deleted', Reason.Cancelled, `the ${kind} was deleted`);
}

export function shutdownCancellation(): Cancellation {
  return new Cancellation('shutdown', Reason.Cancelled, 'the agent was stopped');
}

/** The operator failed the object (its deadline passed): keep its reason and message. */
export function failedCancellation(status: { conditions?: Array<{ type: string; reason: string }>; error?: { message: string } } | undefined): Cancellation {
  const ready = status?.conditions?.find((c) => c.type === 'Ready');
  const reason = (Object.values(Reason) as string[]).includes(ready?.reason ?? '') ? (ready!.reason as Reason) : Reason.DeadlineExceeded;
  return new Cancellation('failed', reason, status?.error?.message ?? 'the operator marked it Failed');
}

/** The Cancellation behind an aborted signal, if the signal was aborted. */
export function cancellationOf(signal: AbortSignal): Cancellation | undefined {
  if (!signal.aborted) return undefined;
  return signal.reason instanceof Cancellation ? signal.reason : new Cancellation('shutdown', Reason.Cancelled, String(signal.reason));
}
