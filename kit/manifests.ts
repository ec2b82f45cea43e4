// Manifests built from the api/ types, so a suite's objects are checked against the schemas the
// CRDs come from, and written as YAML by api/yaml.ts.
import {
  API_VERSION,
  type VMRestoreSpecInput,
  type VMSnapshotClassFields,
  type VMSnapshotScheduleSpecInput,
  type VMSnapshotSpecInput,
} from '../api/index.js';
import { toYaml } from '../api/yaml.js';

interface Named {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const meta = (m: string | Named) => (typeof m === 'string' ? { name: m } : m);

export const vmSnapshot = (m: string | Named, spec: VMSnapshotSpecInput) => ({ apiVersion: API_VERSION, kind: 'VMSnapshot' as const, metadata: meta(m), spec });

export const vmRestore = (m: string | Named, spec: VMRestoreSpecInput) => ({ apiVersion: API_VERSION, kind: 'VMRestore' as const, metadata: meta(m), spec });

export const vmSnapshotClass = (m: string | Named, fields: Partial<VMSnapshotClassFields>) => ({
  apiVersion: API_VERSION,
  kind: 'VMSnapshotClass' as const,
  metadata: meta(m),
  ...fields,
});

export const vmSnapshotSchedule = (m: string | Named, spec: VMSnapshotScheduleSpecInput) => ({
  apiVersion: API_VERSION,
  kind: 'VMSnapshotSchedule' as const,
  metadata: meta(m),
  spec,
});

/** Documents as one YAML stream for `kubectl apply -f -`. */
export function yamlDocs(...docs: object[]): string {
  return docs.map((d) => `---\n${toYaml(d)}`).join('');
}
