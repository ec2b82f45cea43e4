// What every part of the daemon shares: the cluster, the node's layout, the
// VM locks and the files restores are reading.
import type { AgentMetrics } from './metrics.js';
import type { Logger } from 'pino';
import type { AgentConfig } from '../../../api/index.js';
import { statusCode, type Kube, type ObjectRef, type ResourceName } from '../../../kube/client.js';
import type { EventRecorder } from '../../../kube/events.js';
import type { VmFinder } from './discovery.js';
import type { VmLocks } from './vm-locks.js';

export interface AgentContext {
  kube: Kube;
  events: EventRecorder;
  log: Logger;
  nodeName: string;
  config: AgentConfig;
  discovery: VmFinder;
  locks: VmLocks;
  /** The agent's own namespace (repositories' Secrets are read there). */
  namespace?: string;
  /** Snapshot files that running restores read: never deleted under them. */
  filesInUse: Map<string, number>;
  metrics?: AgentMetrics;
}

export function useFile(ctx: AgentContext, file: string): () => void {
  ctx.filesInUse.set(file, (ctx.filesInUse.get(file) ?? 0) + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const n = (ctx.filesInUse.get(file) ?? 1) - 1;
    if (n <= 0) ctx.filesInUse.delete(file);
    else ctx.filesInUse.set(file, n);
  };
}

/**
 * A final status patch must land: retried with backoff. 'gone' when the object
 * no longer exists, 'refused' when the API server will never take it (422: the object is
 * already finished, its terminal phase is final), 'failed' when every attempt failed (the
 * caller retries later).
 */
export async function patchStatusWithRetry(
  ctx: AgentContext,
  resource: ResourceName,
  ref: ObjectRef,
  status: object,
  attempts = 5,
): Promise<'ok' | 'gone' | 'refused' | 'failed'> {
  let delay = 500;
  for (let i = 1; ; i++) {
    try {
      await ctx.kube.patchStatus(resource, ref, { status });
      return 'ok';
    } catch (err) {
      if (statusCode(err) === 404) return 'gone';
      if (statusCode(err) === 422) {
        ctx.log.warn({ err: String(err), resource, ref }, 'the API server refused the final status (the object already finished); keeping its outcome');
        return 'refused';
      }
      if (i >= attempts) {
        ctx.log.error({ err: String(err), resource, ref }, 'cannot write the final status');
        return 'failed';
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }
}
