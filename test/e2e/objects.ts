// The suites' reads and writes of objects on the test control plane through its kubectl: apply,
// get as JSON, wait for a field, and wait for a terminal phase that must be the expected one.
import { isTerminal } from '../../api/protocol.js';
import { kubectl, kubectlOk } from '../../stack/controlplane.js';
import { poll } from '../../kit/poll.js';
import { yamlDocs } from '../../kit/manifests.js';

/** Polls a namespaced object's jsonpath until `accept` says yes; returns the last value. */
export async function waitFor(
  resource: string,
  namespace: string,
  jsonpath: string,
  accept: (value: string) => boolean,
  timeoutMs = 90_000,
): Promise<string> {
  let last = '';
  return poll(`${resource} in ${namespace}: ${jsonpath} to be as expected`, async () => {
    const r = await kubectl(['get', resource, '-n', namespace, '-o', `jsonpath=${jsonpath}`]);
    last = r.code === 0 ? r.stdout : `(error: ${r.stderr.trim()})`;
    return r.code === 0 && accept(last) && last;
  }, { timeoutMs, intervalMs: 250, describe: () => JSON.stringify(last) });
}

export async function getJson<T = Record<string, any>>(resource: string, namespace: string): Promise<T> {
  return JSON.parse(await kubectlOk(['get', resource, '-n', namespace, '-o', 'json'])) as T;
}

/** Applies objects (kit/manifests.ts builds them from the api/ types), or YAML text such as an example file. */
export async function apply(docs: object | object[] | string, namespace?: string): Promise<void> {
  const input = typeof docs === 'string' ? docs : yamlDocs(...[docs].flat());
  const r = await kubectl(['apply', ...(namespace ? ['-n', namespace] : []), '-f', '-'], { input });
  if (r.code !== 0) throw new Error(`kubectl apply failed: ${r.stderr}`);
}

/** Waits for a terminal phase; fails the test with the object's error if it is not `expected`. */
export async function waitForPhase(resource: string, namespace: string, expected: 'Succeeded' | 'Failed', timeoutMs = 120_000): Promise<Record<string, any>> {
  await waitFor(resource, namespace, '{.status.phase}', isTerminal, timeoutMs);
  const obj = await getJson(resource, namespace);
  if (obj.status.phase !== expected) {
    throw new Error(`${resource} in ${namespace} ended ${obj.status.phase}, expected ${expected}: ${JSON.stringify(obj.status.error ?? obj.status.conditions)}`);
  }
  return obj;
}
