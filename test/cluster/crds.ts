// The vmsnap CRDs on the shared test control plane. CRDs are cluster-scoped and every test file
// (and every run) shares them, so one owner applies them: this helper, with server-side apply
// under a fixed field manager. That is idempotent, safe when several jest workers call it at once,
// and always leaves the cluster with the CRDs of the working tree. The Helm test installs the
// chart with --skip-crds so Helm never competes for them.
// js-yaml, not client-node's loadAllYaml: that one turns known kinds into typed objects (renaming
// keys such as x-kubernetes-validations), and these tests compare the raw documents.
import yaml from 'js-yaml';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

import { helm, kubectl, kubectlOk, repoRoot } from '../../stack/controlplane.js';
import { poll } from '../../kit/poll.js';

export const CRD_DIR = path.join(repoRoot, 'crds');
export const CRD_FIELD_MANAGER = 'vmsnap-tests';

export const API_PREFIX = '/apis/vmsnap.io/v1alpha1';

let applied: Promise<void> | undefined;

/** Applies crds/*.yaml and waits until the API server serves them. Once per test file. */
export function ensureCrds(): Promise<void> {
  if (!applied) {
    const applying = (async () => {
      await kubectlOk(['apply', '--server-side', '--force-conflicts', `--field-manager=${CRD_FIELD_MANAGER}`, '-f', CRD_DIR]);
      await kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', CRD_DIR]);
      // Established can precede discovery by a moment; kubectl (not raw requests) needs discovery.
      let names = '';
      await poll('the vmsnap.io resources to be discoverable', async () => {
        names = await kubectlOk(['api-resources', '--api-group=vmsnap.io', '-o', 'name']);
        return ['vmsnapshots', 'vmrestores', 'vmsnapshotclasses', 'vmsnapshotschedules', 'vminventories'].every((r) => names.includes(`${r}.vmsnap.io`));
      }, { timeoutMs: 10_000, describe: () => names });
    })();
    applied = applying;
    applying.catch(() => {
      if (applied === applying) applied = undefined;
    });
  }
  return applied;
}

/** Every document of a YAML text, as plain data (empty documents dropped). */
export function parseYamlDocs(text: string): Array<Record<string, any>> {
  return yaml.loadAll(text).filter((d): d is Record<string, any> => !!d && typeof d === 'object');
}

export function readYamlDocs(file: string): Array<Record<string, any>> {
  return parseYamlDocs(readFileSync(file, 'utf8'));
}

export function crdDocs(dir = CRD_DIR): Array<Record<string, any>> {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => readYamlDocs(path.join(dir, f)));
}

let rules: Promise<void> | undefined;

/**
 * The chart's object-rules admission policy (rules a CRD schema cannot state), rendered by Helm and
 * applied under the tests' field manager; resolves once the API server enforces it, which a
 * dry-run update of a probe object in `namespace` shows (policies take effect a moment after they
 * are stored).
 */
export function ensureObjectRules(namespace: string): Promise<void> {
  rules ??= (async () => {
    const rendered = await helm(['template', 'vmsnap-tests', path.join(repoRoot, 'helm/vmsnap'), '--show-only', 'templates/object-rules.yaml']);
    if (rendered.code !== 0) throw new Error(`helm template failed: ${rendered.stderr}`);
    await kubectlOk(['apply', '--server-side', '--force-conflicts', `--field-manager=${CRD_FIELD_MANAGER}`, '-f', '-'], { input: rendered.stdout });
    const probe = `object-rules-probe-${Math.random().toString(16).slice(2, 8)}`;
    await kubectlOk(['apply', '-n', namespace, '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMSnapshot', metadata: { name: probe }, spec: { vmName: 'probe', digests: 'None' } }),
    });
    let answer = '';
    await poll('the object-rules policy to be enforced', async () => {
      const r = await kubectl(['patch', '-n', namespace, 'vmsnapshot', probe, '--type=merge', '--dry-run=server', '-p', '{"spec":{"digests":"Record"}}']);
      answer = r.stderr || r.stdout;
      return r.code !== 0 && /digests is immutable/.test(r.stderr);
    }, { timeoutMs: 30_000, intervalMs: 300, describe: () => answer });
    await kubectlOk(['delete', '-n', namespace, 'vmsnapshot', probe, '--wait=false']);
  })();
  return rules;
}
