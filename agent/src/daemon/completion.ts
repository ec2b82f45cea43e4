// What a finished run reports: the final status patch and the event telling it.
import type { EventType } from '../../../kube/events.js';

export interface Completion {
  status: Record<string, unknown>;
  event: { type: EventType; reason: string; message: string };
  /** Set when the status must not be written (e.g. it would only repeat the operator's Failed). */
  skipStatus?: boolean;
}
