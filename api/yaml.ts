import { dumpYaml } from '@kubernetes/client-node';

// Long strings stay on one line (no folding), so generated files diff and grep line by line.
const OPTIONS = { lineWidth: -1, noRefs: true };

/**
 * One YAML document (no leading `---`), ending with a newline, written by client-node's `dumpYaml`.
 * `dumpYaml` passes a document of a kind it models (a CustomResourceDefinition) through its typed
 * serializer, which expects its own field names and drops JSON members such as `enum` and
 * `x-kubernetes-*`; so only `apiVersion`/`kind` go through that path and the body is written as it is.
 */
export function toYaml(value: object): string {
  const { apiVersion, kind, ...body } = value as Record<string, unknown>;
  const typed = typeof apiVersion === 'string' && typeof kind === 'string';
  const head = typed ? dumpYaml({ apiVersion, kind }, OPTIONS) : '';
  const rest = typed ? body : value;
  return head + (typed && Object.keys(rest).length === 0 ? '' : dumpYaml(rest, OPTIONS));
}
