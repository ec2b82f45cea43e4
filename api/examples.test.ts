// Every manifest in examples/ must parse with the API schemas and use no unknown field
// (the API server would prune or refuse it, and a user copying the example would be misled).
import { loadAllYaml } from '@kubernetes/client-node';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { z } from 'zod';
import { vmPodManifest } from '../stack/vm-pod.js';
import { API_VERSION, VMRestoreSchema, VMSnapshotClassSchema, VMSnapshotScheduleSchema, VMSnapshotSchema, formatZodError } from './index.js';

const examplesDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../examples');
const SCHEMAS: Record<string, z.ZodType> = {
  VMSnapshot: VMSnapshotSchema,
  VMRestore: VMRestoreSchema,
  VMSnapshotClass: VMSnapshotClassSchema,
  VMSnapshotSchedule: VMSnapshotScheduleSchema,
};

/** Keys present in the input that the schema dropped (metadata passes through as is). */
function unknownKeys(input: unknown, parsed: unknown, at = ''): string[] {
  if (Array.isArray(input) && Array.isArray(parsed)) return input.flatMap((v, i) => unknownKeys(v, parsed[i], `${at}[${i}]`));
  if (input && typeof input === 'object' && parsed && typeof parsed === 'object') {
    return Object.entries(input).flatMap(([key, value]) =>
      key in parsed ? unknownKeys(value, (parsed as Record<string, unknown>)[key], at ? `${at}.${key}` : key) : [at ? `${at}.${key}` : key],
    );
  }
  return [];
}

const files = readdirSync(examplesDir).filter((f) => f.endsWith('.yaml')).sort();
const docs = files.flatMap((file) =>
  loadAllYaml(readFileSync(path.join(examplesDir, file), 'utf8'))
    // Pods and Secrets are Kubernetes' own kinds: vm-pod.yaml is checked against the kit that builds VM pods below.
    .filter((doc) => doc && doc.kind !== 'Pod' && doc.kind !== 'Secret')
    .map((doc, i) => [`${file}#${i}`, doc] as [string, Record<string, unknown>]),
);

describe('examples', () => {
  it('include the documented files', () => {
    expect(files).toEqual(expect.arrayContaining(['vmsnapshot.yaml', 'vmrestore.yaml', 'vmsnapshotclass.yaml']));
  });

  it.each(docs)('%s parses with the API schema and has no unknown fields', (_name, doc) => {
    expect(doc.apiVersion).toBe(API_VERSION);
    const schema = SCHEMAS[String(doc.kind)];
    if (!schema) throw new Error(`unexpected kind ${String(doc.kind)}`);
    const result = schema.safeParse(doc);
    if (!result.success) throw new Error(formatZodError(result.error));
    expect(unknownKeys(doc, result.data)).toEqual([]);
  });

  it('vm-pod.yaml is the VM pod the tests and the demo build (demo in default, the guest image)', () => {
    const [pod] = loadAllYaml(readFileSync(path.join(examplesDir, 'vm-pod.yaml'), 'utf8'));
    const version = /^appVersion: *"?([^"\n]+)"?$/m.exec(readFileSync(path.join(examplesDir, '../helm/vmsnap/Chart.yaml'), 'utf8'))![1];
    expect(pod).toEqual(vmPodManifest({ namespace: 'default', name: 'demo', image: `localhost/vmsnap/vm-guest:${version}`, memMiB: 512, fillMiB: 256, seed: 7 }));
  });

  it('demo-snapshot snapshots vm demo in default, and vmrestore.yaml restores it', () => {
    const [snap] = loadAllYaml(readFileSync(path.join(examplesDir, 'vmsnapshot.yaml'), 'utf8'));
    expect(snap).toMatchObject({ kind: 'VMSnapshot', metadata: { name: 'demo-snapshot', namespace: 'default' }, spec: { vmName: 'demo' } });
    const [restore] = loadAllYaml(readFileSync(path.join(examplesDir, 'vmrestore.yaml'), 'utf8'));
    expect(restore).toMatchObject({ kind: 'VMRestore', metadata: { namespace: 'default' }, spec: { snapshotName: 'demo-snapshot' } });
    const [cls] = loadAllYaml(readFileSync(path.join(examplesDir, 'vmsnapshotclass.yaml'), 'utf8'));
    expect(cls).toMatchObject({ kind: 'VMSnapshotClass', metadata: { annotations: { 'vmsnap.io/is-default-class': 'true' } } });
  });
});
