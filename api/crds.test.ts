// The CRDs in crds/ (and the chart's copies) must be exactly what the zod schemas generate.
import { loadAllYaml } from '@kubernetes/client-node';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { allCrds, crdFiles, toStructural, type CustomResourceDefinition, type JSONSchemaProps } from './crd.js';
import { CHART_DIR, CRD_DIR, generatedFiles } from './generated.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FIX = 'run `npm run gen:crds` to regenerate';

describe('generated files', () => {
  it.each(generatedFiles().map((f) => [f.path, f.content]))('%s is up to date', (file, content) => {
    let current: string;
    try {
      current = readFileSync(path.join(root, file), 'utf8');
    } catch {
      throw new Error(`${file} is missing: ${FIX}`);
    }
    if (current !== content) throw new Error(`${file} differs from what api/ generates: ${FIX}`);
  });

  it.each([CRD_DIR, `${CHART_DIR}/crds`])('%s holds no CRD that is not generated', (dir) => {
    const expected = crdFiles().map((f) => f.name).sort();
    expect(readdirSync(path.join(root, dir)).filter((f) => f.endsWith('.yaml')).sort()).toEqual(expected);
  });

  it('the YAML reads back as the generated objects', () => {
    // loadAllYaml turns known kinds into client-node classes; JSON is YAML, so reading the
    // generated object as JSON through the same loader gives the reference to compare with.
    for (const def of allCrds()) {
      const file = path.join(root, CRD_DIR, `${def.spec.group}_${def.spec.names.plural}.yaml`);
      expect(loadAllYaml(readFileSync(file, 'utf8'))).toEqual(loadAllYaml(JSON.stringify(def)));
    }
  });
});

function byKind(kind: string): CustomResourceDefinition {
  const def = allCrds().find((d) => d.spec.names.kind === kind);
  if (!def) throw new Error(`no CRD for ${kind}`);
  return def;
}

const version = (kind: string) => byKind(kind).spec.versions[0]!;
const schema = (kind: string) => version(kind).schema.openAPIV3Schema;
const prop = (node: JSONSchemaProps, ...names: string[]): JSONSchemaProps =>
  names.reduce((n, name) => (n.properties as Record<string, JSONSchemaProps>)[name]!, node);
const rules = (node: JSONSchemaProps) => (node['x-kubernetes-validations'] ?? []) as Array<{ rule: string; message: string; fieldPath?: string }>;

// Plurals, singulars and short names KubeVirt v1.x and CDI register (kubectl resolves short names
// before singulars, so a short name here would shadow ours, or ours theirs).
const KUBEVIRT_NAMES = new Set([
  'vm', 'vms', 'vmi', 'vmis', 'kv', 'kvs', 'vmim', 'vmims', 'vmirs', 'vmirss', 'vmipreset', 'vmipresets',
  'vmsnapshot', 'vmsnapshots', 'vmsnapshotcontent', 'vmsnapshotcontents', 'vmrestore', 'vmrestores',
  'vmexport', 'vmexports', 'vmclone', 'vmclones', 'vmpool', 'vmpools', 'vmbackup', 'vmbackups',
  'vminstancetype', 'vminstancetypes', 'vmf', 'vmfs', 'vmpreference', 'vmpreferences', 'vmp', 'vmps',
  'vmclusterinstancetype', 'vmclusterinstancetypes', 'vmcf', 'vmcfs', 'vmclusterpreference', 'vmclusterpreferences', 'vmcp', 'vmcps',
  'dv', 'dvs', 'cdi', 'cdis', 'dic', 'dics', 'das', 'ot', 'ots',
  // CSI snapshots, often installed beside it
  'vs', 'vsc', 'vsclass', 'vsclasses',
]);

describe('CRD shape', () => {
  it.each([
    ['VMSnapshot', 'vmsnapshots.vmsnap.io', 'Namespaced', ['vmss']],
    ['VMRestore', 'vmrestores.vmsnap.io', 'Namespaced', ['vmsr']],
    ['VMSnapshotClass', 'vmsnapshotclasses.vmsnap.io', 'Cluster', ['vmsc']],
    ['VMInventory', 'vminventories.vmsnap.io', 'Cluster', ['vminv']],
  ])('%s is %s, %s, short names %j, category vmsnap', (kind, name, scope, shortNames) => {
    const def = byKind(kind);
    expect(def.metadata.name).toBe(name);
    expect(def.spec.group).toBe('vmsnap.io');
    expect(def.spec.scope).toBe(scope);
    expect(def.spec.names.shortNames).toEqual(shortNames);
    expect(def.spec.names.categories).toEqual(['vmsnap']);
    expect(def.spec.versions.map((v) => [v.name, v.served, v.storage])).toEqual([['v1alpha1', true, true]]);
  });

  it('short names collide with nothing KubeVirt (or CDI) installs, and no name is the category', () => {
    const ours = allCrds().flatMap((d) => d.spec.names.shortNames);
    for (const name of ours) expect([name, KUBEVIRT_NAMES.has(name)]).toEqual([name, false]);
    const all = allCrds().flatMap((d) => [d.spec.names.plural, d.spec.names.singular, ...d.spec.names.shortNames]);
    expect(all).not.toContain('vmsnap'); // a resource named like the category would hide it
    expect(new Set(ours).size).toBe(ours.length);
  });

  it('has a status subresource where there is a status', () => {
    expect(version('VMSnapshot').subresources).toEqual({ status: {} });
    expect(version('VMRestore').subresources).toEqual({ status: {} });
    expect(version('VMInventory').subresources).toEqual({ status: {} });
    expect(version('VMSnapshotClass').subresources).toBeUndefined();
  });

  it('prints the agreed columns', () => {
    const columns = (kind: string) => version(kind).additionalPrinterColumns.filter((c) => !c.priority).map((c) => c.name);
    expect(columns('VMSnapshot')).toEqual(['VM', 'Phase', 'Ready', 'Size', 'Duration', 'Throughput', 'Node', 'Age']);
    expect(columns('VMRestore')).toEqual(['Snapshot', 'Target', 'Phase', 'Mode', 'Duration', 'Downtime', 'Node', 'Age']);
  });

  it('printer columns point at fields that exist in the schema', () => {
    for (const def of allCrds()) {
      const v = def.spec.versions[0]!;
      for (const column of v.additionalPrinterColumns) {
        if (column.jsonPath.startsWith('.metadata.')) continue;
        const names = column.jsonPath.slice(1).split('.');
        expect(() => prop(v.schema.openAPIV3Schema, ...names)).not.toThrow();
        expect(prop(v.schema.openAPIV3Schema, ...names)).toBeDefined();
      }
    }
  });

  it('requires spec and its required fields', () => {
    expect(schema('VMSnapshot').required).toEqual(['spec']);
    expect(prop(schema('VMSnapshot'), 'spec').required).toEqual(['vmName']);
    expect(prop(schema('VMRestore'), 'spec').required).toBeUndefined(); // snapshotName or latestSnapshotOf, a CEL rule says which
  });

  it('carries defaults, enums, ranges and patterns', () => {
    const spec = prop(schema('VMSnapshot'), 'spec');
    expect(prop(spec, 'captureMode')).toMatchObject({ type: 'string', enum: ['Paused', 'Live'], default: 'Paused' });
    expect(prop(spec, 'afterSnapshot')).toMatchObject({ enum: ['Resume', 'Stop'], default: 'Resume' });
    expect(prop(spec, 'failureDeadline')).toMatchObject({ type: 'string', default: '10m' });
    expect(prop(spec, 'directIO')).toMatchObject({ enum: ['Auto', 'Always', 'Never'] });
    expect(prop(spec, 'directIO').default).toBeUndefined(); // a class must be able to supply it
    expect(prop(spec, 'parallelism', 'channels')).toMatchObject({ type: 'integer', minimum: 1, maximum: 64 });
    expect(prop(spec, 'vmName')).toMatchObject({ maxLength: 63, pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' });
    expect(prop(spec, 'deletionPolicy')).toMatchObject({ enum: ['Delete', 'Retain'] });
    const rspec = prop(schema('VMRestore'), 'spec');
    expect(prop(rspec, 'restoreMode')).toMatchObject({ enum: ['Eager', 'Lazy'], default: 'Eager' });
    expect(prop(rspec, 'ifRunning')).toMatchObject({ enum: ['Fail', 'Replace'], default: 'Fail' });
    expect(prop(rspec, 'afterRestore')).toMatchObject({ enum: ['Running', 'Paused'], default: 'Running' });
    expect(prop(schema('VMSnapshot'), 'status', 'restoreSize')).toMatchObject({ type: 'integer', format: 'int64' });
    expect(prop(schema('VMSnapshot'), 'status', 'conditions')).toMatchObject({
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
    });
  });

  it('makes the identifying fields immutable with CEL', () => {
    const sspec = prop(schema('VMSnapshot'), 'spec');
    expect(rules(prop(sspec, 'vmName'))).toContainEqual(expect.objectContaining({ rule: 'self == oldSelf', message: 'vmName is immutable' }));
    expect(rules(sspec).map((r) => r.fieldPath)).toEqual(expect.arrayContaining(['.className', '.parallelism', '.directIO']));
    expect(rules(sspec).map((r) => r.fieldPath)).not.toContain('.deletionPolicy');
    const rspec = prop(schema('VMRestore'), 'spec');
    expect(rules(prop(rspec, 'snapshotName'))).toContainEqual(expect.objectContaining({ rule: 'self == oldSelf' }));
    expect(rules(rspec)).toContainEqual(expect.objectContaining({ fieldPath: '.targetVMName', message: expect.stringContaining('targetVMName is immutable') }));
    expect(rules(rspec)).toContainEqual(expect.objectContaining({ fieldPath: '.directIO', rule: expect.stringContaining("'Lazy'") }));
    for (const kind of ['VMSnapshot', 'VMRestore']) {
      expect(rules(prop(schema(kind), 'status'))).toContainEqual(expect.objectContaining({ fieldPath: '.phase', rule: expect.stringContaining("oldSelf.phase in ['Succeeded', 'Failed']") }));
    }
    expect(rules(prop(sspec, 'failureDeadline')).map((r) => r.rule)).toContainEqual(
      expect.stringContaining("(duration(self) >= duration('1s') && duration(self) <= duration('168h'))"),
    );
  });
});

describe('structural schemas', () => {
  const FORBIDDEN = ['$schema', '$ref', '$defs', 'definitions', 'anyOf', 'oneOf', 'allOf', 'not', 'const', 'title', 'propertyNames', 'uniqueItems', 'patternProperties', 'dependencies'];

  function walk(node: JSONSchemaProps, at: string, visit: (node: JSONSchemaProps, at: string) => void): void {
    visit(node, at);
    for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, JSONSchemaProps>)) walk(child, `${at}.${name}`, visit);
    if (node.items) walk(node.items as JSONSchemaProps, `${at}[]`, visit);
    if (typeof node.additionalProperties === 'object') walk(node.additionalProperties as JSONSchemaProps, `${at}{}`, visit);
  }

  it.each(allCrds().map((d) => [d.spec.names.kind, d]))('%s: every node is typed and uses only Kubernetes keywords', (_kind, def) => {
    walk((def as CustomResourceDefinition).spec.versions[0]!.schema.openAPIV3Schema, '', (node, at) => {
      // The one exception: an enum that still reads the boolean it replaced (untyped, closed by its enum).
      const legacyBoolean = node['x-kubernetes-preserve-unknown-fields'] === true && Array.isArray(node.enum) && node.enum.includes(true) && node.enum.includes(false);
      if (!legacyBoolean) expect([at, typeof node.type]).toEqual([at, 'string']);
      for (const key of FORBIDDEN) expect([at, key, key in node]).toEqual([at, key, false]);
      expect([at, node.additionalProperties]).not.toEqual([at, false]);
      if (node.default !== undefined && node.enum) expect(node.enum).toContain(node.default);
      if (node.type === 'string' && rules(node).length) expect([at, typeof node.maxLength]).toEqual([at, 'number']);
    });
  });

  it('toStructural refuses what Kubernetes would refuse', () => {
    expect(() => toStructural({ anyOf: [{ type: 'string' }, { type: 'integer' }] })).toThrow(/anyOf/);
    expect(() => toStructural({ type: 'object', properties: { a: { description: 'untyped' } } })).toThrow(/\.a: a structural schema needs a single type/);
    expect(() => toStructural({ type: 'object' })).toThrow(/object needs properties/);
    expect(toStructural({ $schema: 'x', type: 'object', additionalProperties: false, properties: { n: { type: 'integer', minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER } } })).toEqual({
      type: 'object',
      properties: { n: { type: 'integer' } },
    });
  });
});
