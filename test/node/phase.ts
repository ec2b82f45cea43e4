// Waiting for a VMSnapshot or VMRestore on the node cluster to reach a terminal phase, read as the
// admin (what a tenant would see too).
import { isTerminal } from '../../api/protocol.js';
import { poll } from '../../kit/poll.js';
import { nodeKubectlOk } from '../../stack/node-cluster.js';

/** The node suites' wait: a probe's value once it has one, polled every 250 ms (default 120 s). */
export const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> => poll(what, probe, { timeoutMs, intervalMs: 250 });

export async function getAsAdmin(resource: string, namespace: string): Promise<Record<string, any>> {
  return JSON.parse(await nodeKubectlOk(['get', resource, '-n', namespace, '-o', 'json']));
}

/**
 * Resolves with the object once its phase is Succeeded or Failed. With `expected`, the other one
 * fails with the object's error and `context()` (e.g. the release's pods, events and logs).
 */
export async function finished(
  resource: string,
  namespace: string,
  opts: { expected?: 'Succeeded' | 'Failed'; timeoutMs?: number; context?: () => Promise<string> } = {},
): Promise<Record<string, any>> {
  let last: Record<string, any> | undefined;
  const obj = await poll(`${namespace}/${resource} to finish`, async () => {
    last = await getAsAdmin(resource, namespace);
    return isTerminal(last.status?.phase) && last;
  }, { timeoutMs: opts.timeoutMs ?? 180_000, intervalMs: 250, describe: () => JSON.stringify(last?.status) });
  if (opts.expected && obj.status.phase !== opts.expected) {
    const context = opts.context ? `\n${await opts.context()}` : '';
    throw new Error(`${namespace}/${resource} ended ${obj.status.phase}, expected ${opts.expected}: ${JSON.stringify(obj.status.error ?? obj.status.conditions)}${context}`);
  }
  return obj;
}
