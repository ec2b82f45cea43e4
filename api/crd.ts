// Builds the CustomResourceDefinitions from the zod schemas, so crds/ can never disagree with
// what the operator and agent parse. Kubernetes wants *structural* OpenAPI v3 schemas and
// rejects much of JSON Schema, so zod's output is filtered through an allow-list here.
import { z } from 'zod';
import {
  CATEGORY,
  CRD_REVISION,
  CRD_REVISION_ANNOTATION,
  GROUP,
  LEGACY_BOOLEAN_KEY,
  RESOURCES,
  VERSION,
  type ResourceNames,
} from './common.js';
import { VMInventoryStatusSchema } from './vminventory.js';
import { VMRestoreSpecSchema, VMRestoreStatusSchema } from './vmrestore.js';
import { VMSnapshotSpecSchema, VMSnapshotStatusSchema } from './vmsnapshot.js';
import { VMSnapshotClassFieldsSchema } from './vmsnapshotclass.js';
import { SCHEDULE_NAME_MAX, VMSnapshotScheduleSpecSchema, VMSnapshotScheduleStatusSchema } from './vmsnapshotschedule.js';
import { toYaml } from './yaml.js';

export type JSONSchemaProps = { [key: string]: unknown };

export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  priority?: number;
}

export interface CustomResourceDefinition {
  apiVersion: 'apiextensions.k8s.io/v1';
  kind: 'CustomResourceDefinition';
  metadata: { name: string; labels: Record<string, string>; annotations: Record<string, string> };
  spec: {
    group: string;
    names: { kind: string; listKind: string; plural: string; singular: string; shortNames: string[]; categories: string[] };
    scope: 'Namespaced' | 'Cluster';
    versions: Array<{
      name: string;
      served: boolean;
      storage: boolean;
      subresources?: { status: Record<string, never> };
      additionalPrinterColumns: PrinterColumn[];
      selectableFields?: Array<{ jsonPath: string }>;
      schema: { openAPIV3Schema: JSONSchemaProps };
    }>;
  };
}

// Keywords Kubernetes accepts in a CRD schema (JSONSchemaProps), in the order we write them.
const KEY_ORDER = [
  'description',
  'type',
  'format',
  'enum',
  'default',
  'minimum',
  'exclusiveMinimum',
  'maximum',
  'exclusiveMaximum',
  'multipleOf',
  'minLength',
  'maxLength',
  'pattern',
  'minItems',
  'maxItems',
  'minProperties',
  'maxProperties',
  'nullable',
  'required',
  'properties',
  'additionalProperties',
  'items',
];
const ALLOWED = new Set(KEY_ORDER);
// Meaningless to Kubernetes, or JSON Schema keywords it refuses.
const DROPPED = new Set(['$schema', 'title', 'id', '$id']);
const SAFE_INTEGER_BOUND = Number.MAX_SAFE_INTEGER;

function rank(key: string): number {
  const i = KEY_ORDER.indexOf(key);
  return i >= 0 ? i : KEY_ORDER.length; // x-kubernetes-* last
}

/** Turns zod's JSON Schema into a structural Kubernetes schema, or throws naming the path. */
export function toStructural(node: JSONSchemaProps, path = ''): JSONSchemaProps {
  const legacy = node[LEGACY_BOOLEAN_KEY] as { values: string[] } | undefined;
  if (legacy) return legacyBooleanEnum(node, legacy.values);
  const out: JSONSchemaProps = {};
  for (const [key, value] of Object.entries(node)) {
    if (DROPPED.has(key)) continue;
    if (key === 'properties') {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, JSONSchemaProps>).map(([name, child]) => [name, toStructural(child, `${path}.${name}`)]),
      );
    } else if (key === 'items') {
      out.items = toStructural(value as JSONSchemaProps, `${path}[]`);
    } else if (key === 'additionalProperties') {
      // `false` is the default for pruned objects; a schema describes a map (z.record).
      if (value === false) continue;
      // An object kept as it is (a recorded pod spec): Kubernetes takes no schema for its members.
      if (node['x-kubernetes-preserve-unknown-fields'] === true) continue;
      if (value === true || typeof value !== 'object') throw new Error(`${path}: additionalProperties must be a schema`);
      out.additionalProperties = toStructural(value as JSONSchemaProps, `${path}{}`);
    } else if (key === 'pattern' && node.format === 'date-time') {
      continue; // zod's RFC 3339 regex; the date-time format already checks it.
    } else if ((key === 'maximum' && value === SAFE_INTEGER_BOUND) || (key === 'minimum' && value === -SAFE_INTEGER_BOUND)) {
      continue; // zod's .int() bounds; Kubernetes integers are int64.
    } else if (key === 'required' && Array.isArray(value) && value.length === 0) {
      continue;
    } else if (key === 'const') {
      out.enum = [value];
    } else if (ALLOWED.has(key) || key.startsWith('x-kubernetes-')) {
      out[key] = value;
    } else {
      throw new Error(`${path || '<root>'}: JSON Schema keyword "${key}" is not allowed in a CRD schema`);
    }
  }
  // CEL cost estimates need bounded strings; an enum's longest value is a true bound.
  if (out.type === 'string' && Array.isArray(out.enum) && out.maxLength === undefined) {
    out.maxLength = Math.max(...out.enum.map((v) => String(v).length));
  }
  const type = out.type;
  if (typeof type !== 'string') throw new Error(`${path || '<root>'}: a structural schema needs a single type`);
  if (type === 'object' && out.properties === undefined && out.additionalProperties === undefined && out['x-kubernetes-preserve-unknown-fields'] !== true) {
    throw new Error(`${path}: an object needs properties, additionalProperties or x-kubernetes-preserve-unknown-fields`);
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => rank(a) - rank(b)));
}

/**
 * An enum that still reads the boolean it replaced: a structural schema allows a field without a
 * single type only when it preserves unknown fields, and the enum keeps any other value out (the
 * API server's message names the field and lists the allowed values).
 */
function legacyBooleanEnum(node: JSONSchemaProps, values: string[]): JSONSchemaProps {
  return {
    ...(node.description ? { description: node.description } : {}),
    enum: [...values, true, false],
    'x-kubernetes-preserve-unknown-fields': true,
  };
}

export function schemaOf(schema: z.ZodType, path = ''): JSONSchemaProps {
  // io 'input': fields with defaults are optional, as they are for users writing YAML.
  const json = z.toJSONSchema(schema, { io: 'input', target: 'openapi-3.0', unrepresentable: 'throw' });
  return toStructural(json as JSONSchemaProps, path);
}

const API_VERSION_DESCRIPTION =
  'APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values.';
const KIND_DESCRIPTION =
  'Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. In CamelCase.';

function rootSchema(description: string, properties: Record<string, JSONSchemaProps>, required: string[]): JSONSchemaProps {
  return {
    description,
    type: 'object',
    ...(required.length ? { required } : {}),
    properties: {
      apiVersion: { description: API_VERSION_DESCRIPTION, type: 'string' },
      kind: { description: KIND_DESCRIPTION, type: 'string' },
      metadata: { type: 'object' },
      ...properties,
    },
  };
}

function crd(
  names: ResourceNames,
  columns: PrinterColumn[],
  openAPIV3Schema: JSONSchemaProps,
  { statusSubresource = true, selectableFields = [] as string[] } = {},
): CustomResourceDefinition {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${names.plural}.${GROUP}`,
      labels: { 'app.kubernetes.io/name': 'vmsnap', 'app.kubernetes.io/part-of': 'vmsnap' },
      annotations: { [CRD_REVISION_ANNOTATION]: String(CRD_REVISION) },
    },
    spec: {
      group: GROUP,
      names: {
        kind: names.kind,
        listKind: names.listKind,
        plural: names.plural,
        singular: names.singular,
        shortNames: [...names.shortNames],
        categories: [CATEGORY],
      },
      scope: names.namespaced ? 'Namespaced' : 'Cluster',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          ...(statusSubresource ? { subresources: { status: {} } } : {}),
          additionalPrinterColumns: columns,
          // kubectl get --field-selector <path>=<value> (Kubernetes 1.32+).
          ...(selectableFields.length ? { selectableFields: selectableFields.map((jsonPath) => ({ jsonPath })) } : {}),
          schema: { openAPIV3Schema },
        },
      ],
    },
  };
}

const age: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

export function vmSnapshotCrd(): CustomResourceDefinition {
  return crd(
    RESOURCES.vmSnapshot,
    [
      { name: 'VM', type: 'string', jsonPath: '.spec.vmName', description: 'The VM snapshotted.' },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      { name: 'Ready', type: 'boolean', jsonPath: '.status.readyToUse', description: 'The snapshot can be restored.' },
      { name: 'Size', type: 'string', jsonPath: '.status.restoreSizeHuman', description: 'Guest RAM size.' },
      { name: 'Duration', type: 'string', jsonPath: '.status.durationHuman', description: 'How long the save took.' },
      { name: 'Throughput', type: 'string', jsonPath: '.status.throughputHuman', description: 'Average save throughput.' },
      { name: 'Node', type: 'string', jsonPath: '.status.nodeName' },
      age,
      { name: 'Class', type: 'string', jsonPath: '.status.effective.className', priority: 1 },
      { name: 'Channels', type: 'integer', jsonPath: '.status.effective.channels', priority: 1 },
      { name: 'DirectIO', type: 'boolean', jsonPath: '.status.directIOUsed', priority: 1 },
      { name: 'PausedMs', type: 'integer', jsonPath: '.status.vmPausedMs', priority: 1 },
    ],
    rootSchema(
      'VMSnapshot saves the RAM and device state of a running QEMU VM to a file on its node. The operator labels it vmsnap.io/vm=<spec.vmName>: list the snapshots of one VM with -l vmsnap.io/vm=<vm> or --field-selector spec.vmName=<vm>.',
      {
        spec: schemaOf(VMSnapshotSpecSchema, '.spec'),
        status: schemaOf(VMSnapshotStatusSchema, '.status'),
      },
      ['spec'],
    ),
    { selectableFields: ['.spec.vmName'] },
  );
}

export function vmRestoreCrd(): CustomResourceDefinition {
  return crd(
    RESOURCES.vmRestore,
    [
      { name: 'Snapshot', type: 'string', jsonPath: '.spec.snapshotName' },
      { name: 'Target', type: 'string', jsonPath: '.status.effective.targetVMName', description: 'The VM restored into.' },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      { name: 'Mode', type: 'string', jsonPath: '.status.restoreMode', description: 'The mode the restore ran in (Eager when a Lazy restore fell back).' },
      { name: 'Duration', type: 'string', jsonPath: '.status.durationHuman', description: 'How long the restore took.' },
      { name: 'Downtime', type: 'string', jsonPath: '.status.downtimeHuman', description: 'How long the VM was unavailable.' },
      { name: 'Node', type: 'string', jsonPath: '.status.nodeName' },
      age,
      { name: 'LatestOf', type: 'string', jsonPath: '.spec.latestSnapshotOf', description: 'The VM whose newest snapshot is restored.', priority: 1 },
      { name: 'Chosen', type: 'string', jsonPath: '.status.snapshotName', description: 'The snapshot chosen for LatestOf.', priority: 1 },
      { name: 'Channels', type: 'integer', jsonPath: '.status.effective.channels', priority: 1 },
      { name: 'DirectIO', type: 'boolean', jsonPath: '.status.directIOUsed', priority: 1 },
      { name: 'Resident%', type: 'number', jsonPath: '.status.lazy.residentPercent', description: 'Lazy restores: share of the RAM in memory.', priority: 1 },
    ],
    rootSchema(
      'VMRestore brings a VM back from a VMSnapshot, into the same VM or a copy.',
      {
        spec: schemaOf(VMRestoreSpecSchema, '.spec'),
        status: schemaOf(VMRestoreStatusSchema, '.status'),
      },
      ['spec'],
    ),
  );
}

export function vmSnapshotClassCrd(): CustomResourceDefinition {
  const fields = schemaOf(VMSnapshotClassFieldsSchema);
  return crd(
    RESOURCES.vmSnapshotClass,
    [
      { name: 'Channels', type: 'integer', jsonPath: '.parallelism.channels' },
      { name: 'DirectIO', type: 'string', jsonPath: '.directIO' },
      { name: 'DeletionPolicy', type: 'string', jsonPath: '.deletionPolicy' },
      { name: 'Default', type: 'string', jsonPath: '.metadata.annotations.vmsnap\\.io/is-default-class' },
      age,
    ],
    rootSchema(
      'VMSnapshotClass holds defaults for VMSnapshots that name it (spec.className), or for all VMSnapshots when annotated vmsnap.io/is-default-class: "true".',
      fields.properties as Record<string, JSONSchemaProps>,
      [],
    ),
    { statusSubresource: false }, // a class has no status
  );
}

/**
 * A template is not the object it describes: the object's transition rules (immutability,
 * oldSelf) would freeze the template, which users edit like any spec. Drops them below `node`.
 */
export function withoutTransitionRules(node: JSONSchemaProps): JSONSchemaProps {
  const out: JSONSchemaProps = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === 'x-kubernetes-validations') {
      const kept = (value as Array<{ rule: string }>).filter((v) => !v.rule.includes('oldSelf'));
      if (kept.length) out[key] = kept;
    } else if (key === 'properties') {
      out.properties = Object.fromEntries(Object.entries(value as Record<string, JSONSchemaProps>).map(([k, v]) => [k, withoutTransitionRules(v)]));
    } else if (key === 'items' || key === 'additionalProperties') {
      out[key] = typeof value === 'object' && value !== null ? withoutTransitionRules(value as JSONSchemaProps) : value;
    } else out[key] = value;
  }
  return out;
}

export function vmSnapshotScheduleCrd(): CustomResourceDefinition {
  const spec = schemaOf(VMSnapshotScheduleSpecSchema, '.spec');
  const props = spec.properties as Record<string, JSONSchemaProps>;
  props.template = withoutTransitionRules(props.template!);
  const root = rootSchema(
    `VMSnapshotSchedule creates VMSnapshots of the selected VMs on a cron schedule and deletes those its retention no longer keeps. Its VMSnapshots are owned by it and labelled vmsnap.io/schedule=<name>: list them with -l vmsnap.io/schedule=<name>.`,
    { spec, status: schemaOf(VMSnapshotScheduleStatusSchema, '.status') },
    ['spec'],
  );
  root['x-kubernetes-validations'] = [
    {
      rule: `self.metadata.name.size() <= ${SCHEDULE_NAME_MAX}`,
      message: `metadata.name must be at most ${SCHEDULE_NAME_MAX} characters: it is the value of the vmsnap.io/schedule label on the VMSnapshots`,
      reason: 'FieldValueInvalid',
    },
  ];
  return crd(
    RESOURCES.vmSnapshotSchedule,
    [
      { name: 'Schedule', type: 'string', jsonPath: '.spec.schedule' },
      { name: 'Suspend', type: 'boolean', jsonPath: '.spec.suspend' },
      { name: 'Active', type: 'integer', jsonPath: '.status.activeCount', description: 'Unfinished VMSnapshots.' },
      { name: 'Last', type: 'date', jsonPath: '.status.lastScheduleTime', description: 'The last run.' },
      { name: 'Next', type: 'date', jsonPath: '.status.nextScheduleTime', description: 'The next run.' },
      { name: 'LastSuccess', type: 'date', jsonPath: '.status.lastSuccessfulTime', description: 'The newest Succeeded VMSnapshot completed.' },
      age,
      { name: 'VMs', type: 'integer', jsonPath: '.status.vmCount', description: 'VMs selected at the last run.', priority: 1 },
      { name: 'Snapshots', type: 'integer', jsonPath: '.status.snapshotCount', description: 'VMSnapshots of this schedule.', priority: 1 },
      { name: 'TimeZone', type: 'string', jsonPath: '.spec.timeZone', priority: 1 },
    ],
    root,
  );
}

export function vmInventoryCrd(): CustomResourceDefinition {
  return crd(
    RESOURCES.vmInventory,
    [
      { name: 'VMs', type: 'integer', jsonPath: '.status.vmCount' },
      { name: 'Agent', type: 'string', jsonPath: '.status.agentVersion' },
      { name: 'Updated', type: 'date', jsonPath: '.status.updatedTime' },
      age,
    ],
    rootSchema(
      "VMInventory lists the VMs one node's vmsnap agent can see. Named after the node; written by its agent.",
      { status: schemaOf(VMInventoryStatusSchema, '.status') },
      [],
    ),
  );
}

export function allCrds(): CustomResourceDefinition[] {
  return [vmSnapshotCrd(), vmRestoreCrd(), vmSnapshotClassCrd(), vmSnapshotScheduleCrd(), vmInventoryCrd()];
}

export const GENERATED_HEADER =
  '# Generated by api/gen-crds.ts from the zod schemas in api/. Do not edit: run `npm run gen:crds`.\n';

/** crds/<group>_<plural>.yaml, as kubebuilder names them. */
export function crdFileName(def: CustomResourceDefinition): string {
  return `${def.spec.group}_${def.spec.names.plural}.yaml`;
}

export function crdFiles(): Array<{ name: string; content: string }> {
  return allCrds().map((def) => ({ name: crdFileName(def), content: `${GENERATED_HEADER}---\n${toYaml(def)}` }));
}
