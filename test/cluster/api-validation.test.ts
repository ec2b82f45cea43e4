// The API server itself enforces the vmsnap.io contract: every example is accepted and stored
// unchanged, documented defaults are filled in, and bad input (wrong types, out-of-range values,
// bad enums, unsafe names, unknown fields, changes to immutable fields) is refused with a message
// that names the offending field. Runs against the real kube-apiserver of the local control plane.
import { readdirSync } from 'node:fs';
import path from 'node:path';

import {
  API_VERSION,
  DEFAULT_AFTER_RESTORE,
  DEFAULT_AFTER_SNAPSHOT,
  DEFAULT_CAPTURE_MODE,
  DEFAULT_CLASS_ANNOTATION,
  DEFAULT_FAILURE_DEADLINE,
  DEFAULT_IF_RUNNING,
  DEFAULT_RESTORE_MODE,
} from '../../api/common.js';
import { toYaml } from '../../api/yaml.js';
import {
  CLUSTER_STARTUP_TIMEOUT_MS,
  createNamespace,
  kubectl,
  kubectlOk,
  repoRoot,
} from '../../stack/controlplane.js';
import { apiRequest } from './api-request.js';
import { API_PREFIX, ensureCrds, ensureObjectRules, readYamlDocs } from './crds.js';

type Obj = Record<string, any>;
type Kind = 'VMSnapshot' | 'VMRestore' | 'VMSnapshotClass' | 'VMInventory';

const PLURAL: Record<Kind, string> = {
  VMSnapshot: 'vmsnapshots',
  VMRestore: 'vmrestores',
  VMSnapshotClass: 'vmsnapshotclasses',
  VMInventory: 'vminventories',
};
const CLUSTER_SCOPED = new Set<Kind>(['VMSnapshotClass', 'VMInventory']);

/** A suffix that keeps this run's cluster-scoped names apart from other runs and files. */
const RUN_ID = Math.random().toString(16).slice(2, 8);
let ns: string;

function collection(kind: Kind): string {
  return CLUSTER_SCOPED.has(kind) ? `${API_PREFIX}/${PLURAL[kind]}` : `${API_PREFIX}/namespaces/${ns}/${PLURAL[kind]}`;
}

function objectPath(kind: Kind, name: string, subresource = ''): string {
  return `${collection(kind)}/${name}${subresource ? `/${subresource}` : ''}`;
}

/** POST as the admin, refusing unknown fields (what `kubectl apply --validate=strict` asks for). */
function create(kind: Kind, obj: Obj) {
  return apiRequest(`${collection(kind)}?fieldValidation=Strict`, { admin: true, method: 'POST', body: obj });
}

function mergePatch(kind: Kind, name: string, patch: Obj, subresource = '') {
  return apiRequest(`${objectPath(kind, name, subresource)}?fieldValidation=Strict`, { admin: true, method: 'PATCH', body: patch });
}

async function createOk(kind: Kind, obj: Obj): Promise<Obj> {
  const r = await create(kind, obj);
  if (r.status !== 201) throw new Error(`creating ${kind} ${obj.metadata?.name}: HTTP ${r.status}: ${r.body}`);
  return JSON.parse(r.body) as Obj;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The field path as a whole token of the server's message: `spec.parallelism.channels: ...`
 * (validation) or `unknown field "spec.foo"` (strict decoding); `spec.parallelism` does not
 * match inside `spec.parallelism.channels`.
 */
function namesField(message: string, field: string): boolean {
  return new RegExp(`(^|[\\s"*[,])${escapeRegExp(field)}(?=[:"]|\\s|$)`, 'm').test(message);
}

/** Asserts a refusal (4xx, not 401/403/404/409) whose message names `field`; returns the message. */
function expectRefusal(r: { status: number; body: string }, field: string): string {
  let message = r.body;
  try {
    message = String((JSON.parse(r.body) as { message?: string }).message ?? r.body);
  } catch {
    // not JSON: keep the raw body
  }
  if (![400, 422].includes(r.status) || !namesField(message, field)) {
    throw new Error(`expected HTTP 400/422 naming "${field}", got HTTP ${r.status}: ${message}`);
  }
  return message;
}

const REMOVE = Symbol('remove');

/** A deep copy of `base` with `dotted` (e.g. "spec.parallelism.channels") set, or removed with REMOVE. */
function withField(base: Obj, dotted: string, value: unknown): Obj {
  const copy = structuredClone(base);
  const keys = dotted.split('.');
  let node: Obj = copy;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Obj;
  }
  const last = keys.at(-1)!;
  if (value === REMOVE) delete node[last];
  else node[last] = value;
  return copy;
}

let seq = 0;
const uniqueName = (prefix: string) => `${prefix}-${RUN_ID}-${++seq}`;

function base(kind: Kind): Obj {
  const metadata = { name: uniqueName(kind.toLowerCase()) };
  switch (kind) {
    case 'VMSnapshot':
      return { apiVersion: API_VERSION, kind, metadata, spec: { vmName: 'demo' } };
    case 'VMRestore':
      return { apiVersion: API_VERSION, kind, metadata, spec: { snapshotName: 'demo-snapshot' } };
    case 'VMSnapshotClass':
      return { apiVersion: API_VERSION, kind, metadata, parallelism: { channels: 4 } };
    case 'VMInventory':
      return { apiVersion: API_VERSION, kind, metadata };
  }
}

const long = (n: number) => 'a'.repeat(n);

// ---- objects users write: one case per field and problem, refused on create ------------------

interface CreateCase {
  kind: Kind;
  /** The field the server must name. */
  field: string;
  problem: string;
  /** Dotted path to set (defaults to `field`) and the value (REMOVE deletes it). */
  set?: string;
  value: unknown;
  /** Further fields, for combinations. */
  also?: Record<string, unknown>;
}

const createCases: CreateCase[] = [
  // VMSnapshot
  { kind: 'VMSnapshot', field: 'spec', problem: 'missing', value: REMOVE },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: 'missing', value: REMOVE },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: 'a number', value: 42 },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: 'empty', value: '' },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: 'upper case', value: 'Demo' },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: 'path traversal', value: '../x' },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: 'a path', value: 'a/b' },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: 'a dot (not a DNS-1123 label)', value: 'demo.vm' },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: 'a leading dash', value: '-demo' },
  { kind: 'VMSnapshot', field: 'spec.vmName', problem: '64 characters', value: long(64) },
  { kind: 'VMSnapshot', field: 'spec.className', problem: 'path traversal', value: '../fast' },
  { kind: 'VMSnapshot', field: 'spec.className', problem: 'upper case', value: 'Fast' },
  { kind: 'VMSnapshot', field: 'spec.className', problem: '254 characters', value: long(254) },
  { kind: 'VMSnapshot', field: 'spec.className', problem: 'a number', value: 7 },
  { kind: 'VMSnapshot', field: 'spec.parallelism', problem: 'not an object', value: 4 },
  { kind: 'VMSnapshot', field: 'spec.digests', problem: 'not None or Record (nor the boolean it replaced)', value: 'yes' },
  { kind: 'VMSnapshot', field: 'spec.digests', problem: 'a number', value: 1 },
  { kind: 'VMSnapshot', field: 'spec.parallelism.channels', problem: 'missing from parallelism', set: 'spec.parallelism', value: {} },
  { kind: 'VMSnapshot', field: 'spec.parallelism.channels', problem: '0', value: 0 },
  { kind: 'VMSnapshot', field: 'spec.parallelism.channels', problem: '65', value: 65 },
  { kind: 'VMSnapshot', field: 'spec.parallelism.channels', problem: 'negative', value: -4 },
  { kind: 'VMSnapshot', field: 'spec.parallelism.channels', problem: 'a string', value: '4' },
  { kind: 'VMSnapshot', field: 'spec.parallelism.channels', problem: 'a fraction', value: 2.5 },
  { kind: 'VMSnapshot', field: 'spec.directIO', problem: 'an unknown mode', value: 'Sometimes' },
  { kind: 'VMSnapshot', field: 'spec.directIO', problem: 'lower case', value: 'auto' },
  { kind: 'VMSnapshot', field: 'spec.directIO', problem: 'a boolean', value: true },
  { kind: 'VMSnapshot', field: 'spec.captureMode', problem: 'an unknown mode', value: 'Running' },
  { kind: 'VMSnapshot', field: 'spec.afterSnapshot', problem: 'an unknown action', value: 'Pause' },
  { kind: 'VMSnapshot', field: 'spec.failureDeadline', problem: 'not a duration', value: '10 minutes' },
  { kind: 'VMSnapshot', field: 'spec.failureDeadline', problem: 'no unit', value: '600' },
  { kind: 'VMSnapshot', field: 'spec.failureDeadline', problem: 'a number', value: 600 },
  { kind: 'VMSnapshot', field: 'spec.failureDeadline', problem: 'negative', value: '-5m' },
  { kind: 'VMSnapshot', field: 'spec.failureDeadline', problem: 'below 1s', value: '500ms' },
  { kind: 'VMSnapshot', field: 'spec.failureDeadline', problem: 'above 168h', value: '169h' },
  { kind: 'VMSnapshot', field: 'spec.failureDeadline', problem: 'longer than 32 characters', value: '1s'.repeat(17) },
  { kind: 'VMSnapshot', field: 'spec.deletionPolicy', problem: 'an unknown policy', value: 'Keep' },
  { kind: 'VMSnapshot', field: 'spec.path', problem: 'unknown (a user-chosen file path)', value: '/etc/passwd' },
  { kind: 'VMSnapshot', field: 'spec.parallelism.threads', problem: 'unknown', value: 8, also: { 'spec.parallelism.channels': 4 } },
  { kind: 'VMSnapshot', field: 'vmName', problem: 'unknown at the top level (belongs in spec)', value: 'demo' },
  { kind: 'VMSnapshot', field: 'metadata.name', problem: 'upper case', value: 'Demo-Snapshot' },
  { kind: 'VMSnapshot', field: 'metadata.name', problem: 'path traversal', value: '..' },
  { kind: 'VMSnapshot', field: 'metadata.name', problem: '254 characters', value: long(254) },
  // VMRestore
  { kind: 'VMRestore', field: 'spec.snapshotName', problem: 'missing', value: REMOVE },
  { kind: 'VMRestore', field: 'spec.snapshotName', problem: 'a number', value: 5 },
  { kind: 'VMRestore', field: 'spec.snapshotName', problem: 'path traversal', value: '../demo-snapshot' },
  { kind: 'VMRestore', field: 'spec.snapshotName', problem: 'upper case', value: 'Demo-Snapshot' },
  { kind: 'VMRestore', field: 'spec.snapshotName', problem: '254 characters', value: long(254) },
  { kind: 'VMRestore', field: 'spec.snapshotName', problem: 'set together with latestSnapshotOf', value: 'demo-snapshot', also: { 'spec.latestSnapshotOf': 'demo' } },
  { kind: 'VMRestore', field: 'spec.latestSnapshotOf', problem: 'a dot (not a DNS-1123 label)', set: 'spec.latestSnapshotOf', value: 'demo.vm', also: { 'spec.snapshotName': REMOVE } },
  { kind: 'VMRestore', field: 'spec.targetVMName', problem: 'path traversal', value: '../other' },
  { kind: 'VMRestore', field: 'spec.targetVMName', problem: 'a dot (not a DNS-1123 label)', value: 'demo.copy' },
  { kind: 'VMRestore', field: 'spec.targetVMName', problem: '64 characters', value: long(64) },
  { kind: 'VMRestore', field: 'spec.parallelism.channels', problem: '100', value: 100 },
  { kind: 'VMRestore', field: 'spec.directIO', problem: 'an unknown mode', value: 'Maybe' },
  { kind: 'VMRestore', field: 'spec.ifRunning', problem: 'an unknown policy', value: 'Kill' },
  { kind: 'VMRestore', field: 'spec.afterRestore', problem: 'an unknown state', value: 'Stopped' },
  { kind: 'VMRestore', field: 'spec.restoreMode', problem: 'an unknown mode', value: 'Lazily' },
  { kind: 'VMRestore', field: 'spec.verify', problem: 'not None or Digests (nor the boolean it replaced)', value: 1 },
  { kind: 'VMRestore', field: 'spec.verify', problem: 'lower case', value: 'digests' },
  { kind: 'VMRestore', field: 'spec.prefetch', problem: 'not None or Background (nor the boolean it replaced)', value: 'Eager' },
  { kind: 'VMRestore', field: 'spec.failureDeadline', problem: 'not a duration', value: '10 minutes' },
  { kind: 'VMRestore', field: 'spec.failureDeadline', problem: 'above 168h', value: '169h' },
  { kind: 'VMRestore', field: 'spec.directIO', problem: 'Always with restoreMode Lazy', value: 'Always', also: { 'spec.restoreMode': 'Lazy' } },
  { kind: 'VMRestore', field: 'spec.snapshotNamespace', problem: 'unknown (no cross-namespace restores)', value: 'other' },
  { kind: 'VMRestore', field: 'spec.file', problem: 'unknown (a user-chosen file path)', value: '/var/lib/x' },
  // VMSnapshotClass (its settings are top-level fields, like a StorageClass)
  { kind: 'VMSnapshotClass', field: 'parallelism.channels', problem: '0', value: 0 },
  { kind: 'VMSnapshotClass', field: 'parallelism.channels', problem: 'a string', value: 'eight' },
  { kind: 'VMSnapshotClass', field: 'directIO', problem: 'an unknown mode', value: 'On' },
  { kind: 'VMSnapshotClass', field: 'deletionPolicy', problem: 'an unknown policy', value: 'Orphan' },
  { kind: 'VMSnapshotClass', field: 'spec', problem: 'unknown (settings are top-level)', value: { directIO: 'Auto' } },
  { kind: 'VMSnapshotClass', field: 'metadata.name', problem: 'upper case', value: 'Fast' },
];

// ---- status, written by the operator and agents: refused through the status subresource -----

interface StatusCase {
  kind: 'VMSnapshot' | 'VMRestore' | 'VMInventory';
  field: string;
  problem: string;
  status: Obj;
}

const condition = { type: 'Ready', status: 'False', lastTransitionTime: '2025-01-01T00:00:00Z', reason: 'Saving', message: 'x' };
const inventoryVM = { namespace: 'default', name: 'demo', qmpSocket: '/var/lib/vmsnap/vms/default/demo/qmp.sock', state: 'running' };

const statusCases: StatusCase[] = [
  { kind: 'VMSnapshot', field: 'status.phase', problem: 'an unknown phase', status: { phase: 'Done' } },
  { kind: 'VMSnapshot', field: 'status.progress.percent', problem: 'above 100', status: { progress: { bytesDone: 2, bytesTotal: 1, percent: 200 } } },
  { kind: 'VMSnapshot', field: 'status.restoreSize', problem: 'negative', status: { restoreSize: -1 } },
  { kind: 'VMSnapshot', field: 'status.startTime', problem: 'not a timestamp', status: { startTime: 'yesterday' } },
  { kind: 'VMSnapshot', field: 'status.conditions[0].reason', problem: 'missing from a condition', status: { conditions: [{ ...condition, reason: undefined }] } },
  { kind: 'VMSnapshot', field: 'status.conditions[0].status', problem: 'not True/False/Unknown', status: { conditions: [{ ...condition, status: 'Yes' }] } },
  { kind: 'VMSnapshot', field: 'status.conditions[1]', problem: 'a duplicate condition type', status: { conditions: [condition, condition] } },
  { kind: 'VMSnapshot', field: 'status.bogus', problem: 'unknown', status: { bogus: 1 } },
  { kind: 'VMRestore', field: 'status.downtimeMs', problem: 'negative', status: { downtimeMs: -5 } },
  { kind: 'VMRestore', field: 'status.phase', problem: 'an unknown phase', status: { phase: 'Restoring' } },
  { kind: 'VMInventory', field: 'status.vms[0].name', problem: '64 characters', status: { vms: [{ ...inventoryVM, name: long(64) }] } },
  { kind: 'VMInventory', field: 'status.vms[1]', problem: 'the same VM twice', status: { vms: [inventoryVM, inventoryVM] } },
  { kind: 'VMInventory', field: 'status.vms[0].qmpSocket', problem: 'missing', status: { vms: [{ ...inventoryVM, qmpSocket: undefined }] } },
];

// ---- immutable fields: a valid object exists, then an update changes one field -------------

const snapshotFull = {
  vmName: 'demo',
  className: 'fast',
  parallelism: { channels: 4 },
  directIO: 'Auto',
  captureMode: 'Paused',
  afterSnapshot: 'Resume',
  failureDeadline: '10m',
  deletionPolicy: 'Delete',
};
const restoreFull = {
  snapshotName: 'demo-snapshot',
  targetVMName: 'demo-copy',
  parallelism: { channels: 2 },
  directIO: 'Never',
  ifRunning: 'Fail',
  afterRestore: 'Running',
  restoreMode: 'Eager',
};

interface UpdateCase {
  kind: 'VMSnapshot' | 'VMRestore';
  /** Created with every optional field set, or with only the required one. */
  from: 'full' | 'minimal';
  change: string;
  specPatch: Obj;
  /** The field the refusal names; undefined: the update must be accepted. */
  field?: string;
}

const updateCases: UpdateCase[] = [
  { kind: 'VMSnapshot', from: 'full', change: 'change vmName', specPatch: { vmName: 'other' }, field: 'spec.vmName' },
  { kind: 'VMSnapshot', from: 'full', change: 'change className', specPatch: { className: 'slow' }, field: 'spec.className' },
  { kind: 'VMSnapshot', from: 'full', change: 'remove className', specPatch: { className: null }, field: 'spec.className' },
  { kind: 'VMSnapshot', from: 'minimal', change: 'add className', specPatch: { className: 'fast' }, field: 'spec.className' },
  { kind: 'VMSnapshot', from: 'full', change: 'change parallelism.channels', specPatch: { parallelism: { channels: 8 } }, field: 'spec.parallelism' },
  { kind: 'VMSnapshot', from: 'full', change: 'remove parallelism', specPatch: { parallelism: null }, field: 'spec.parallelism' },
  { kind: 'VMSnapshot', from: 'minimal', change: 'add parallelism', specPatch: { parallelism: { channels: 8 } }, field: 'spec.parallelism' },
  { kind: 'VMSnapshot', from: 'full', change: 'change directIO', specPatch: { directIO: 'Never' }, field: 'spec.directIO' },
  { kind: 'VMSnapshot', from: 'minimal', change: 'add directIO', specPatch: { directIO: 'Always' }, field: 'spec.directIO' },
  { kind: 'VMSnapshot', from: 'full', change: 'change captureMode', specPatch: { captureMode: 'Live' }, field: 'spec.captureMode' },
  { kind: 'VMSnapshot', from: 'minimal', change: 'change the defaulted captureMode', specPatch: { captureMode: 'Live' }, field: 'spec.captureMode' },
  { kind: 'VMSnapshot', from: 'full', change: 'change afterSnapshot', specPatch: { afterSnapshot: 'Stop' }, field: 'spec.afterSnapshot' },
  { kind: 'VMSnapshot', from: 'full', change: 'change failureDeadline', specPatch: { failureDeadline: '20m' }, field: 'spec.failureDeadline' },
  { kind: 'VMSnapshot', from: 'minimal', change: 'change the defaulted failureDeadline', specPatch: { failureDeadline: '1h' }, field: 'spec.failureDeadline' },
  { kind: 'VMSnapshot', from: 'full', change: 'change deletionPolicy (mutable)', specPatch: { deletionPolicy: 'Retain' } },
  { kind: 'VMSnapshot', from: 'minimal', change: 'add deletionPolicy (mutable)', specPatch: { deletionPolicy: 'Retain' } },
  { kind: 'VMSnapshot', from: 'minimal', change: 'add digests', specPatch: { digests: true }, field: 'spec.digests' },
  { kind: 'VMSnapshot', from: 'minimal', change: 'add digests (the enum)', specPatch: { digests: 'Record' }, field: 'spec.digests' },
  { kind: 'VMRestore', from: 'full', change: 'change snapshotName', specPatch: { snapshotName: 'other' }, field: 'spec.snapshotName' },
  { kind: 'VMRestore', from: 'full', change: 'change targetVMName', specPatch: { targetVMName: 'other' }, field: 'spec.targetVMName' },
  { kind: 'VMRestore', from: 'full', change: 'remove targetVMName', specPatch: { targetVMName: null }, field: 'spec.targetVMName' },
  { kind: 'VMRestore', from: 'minimal', change: 'add targetVMName', specPatch: { targetVMName: 'demo-copy' }, field: 'spec.targetVMName' },
  { kind: 'VMRestore', from: 'full', change: 'change parallelism.channels', specPatch: { parallelism: { channels: 3 } }, field: 'spec.parallelism' },
  { kind: 'VMRestore', from: 'full', change: 'change directIO', specPatch: { directIO: 'Auto' }, field: 'spec.directIO' },
  { kind: 'VMRestore', from: 'minimal', change: 'add directIO', specPatch: { directIO: 'Never' }, field: 'spec.directIO' },
  { kind: 'VMRestore', from: 'full', change: 'change ifRunning', specPatch: { ifRunning: 'Replace' }, field: 'spec.ifRunning' },
  { kind: 'VMRestore', from: 'full', change: 'change afterRestore', specPatch: { afterRestore: 'Paused' }, field: 'spec.afterRestore' },
  { kind: 'VMRestore', from: 'minimal', change: 'add verify', specPatch: { verify: true }, field: 'spec.verify' },
  { kind: 'VMRestore', from: 'minimal', change: 'add prefetch', specPatch: { prefetch: 'None' }, field: 'spec.prefetch' },
  { kind: 'VMRestore', from: 'minimal', change: 'change the defaulted failureDeadline', specPatch: { failureDeadline: '1h' }, field: 'spec.failureDeadline' },
  { kind: 'VMRestore', from: 'minimal', change: 'change the defaulted restoreMode', specPatch: { restoreMode: 'Lazy' }, field: 'spec.restoreMode' },
];

const examplesDir = path.join(repoRoot, 'examples');
const exampleFiles = readdirSync(examplesDir).filter((f) => f.endsWith('.yaml')).sort();
const exampleClassNames: string[] = [];

beforeAll(async () => {
  await ensureCrds();
  ns = await createNamespace('api');
  // The chart's admission policy: the rules a CRD schema cannot state (see helm/vmsnap/templates/object-rules.yaml).
  await ensureObjectRules(ns);
}, CLUSTER_STARTUP_TIMEOUT_MS);

afterAll(async () => {
  // Cluster-scoped objects outlive the namespace; remove this run's (nothing else needs them).
  for (const name of exampleClassNames) await kubectl(['delete', 'vmsnapshotclass', name, '--ignore-not-found', '--wait=false']);
  await kubectl(['delete', 'vmsnapshotclasses,vminventories', '-l', `vmsnap-test-run=${RUN_ID}`, '--ignore-not-found', '--wait=false']);
});

describe('examples/*.yaml on a real API server', () => {
  it('creates every example with kubectl apply --validate=strict and stores it unchanged', async () => {
    expect(exampleFiles.length).toBeGreaterThanOrEqual(3);
    // Secrets (repository.yaml's credentials, for the chart's namespace) are Kubernetes' own kind,
    // stored as `data` rather than as written: the repository suites use them for real.
    const docs = exampleFiles.flatMap((file) => readYamlDocs(path.join(examplesDir, file)).filter((doc) => doc.kind !== 'Secret').map((doc) => ({ file, doc })));
    // Namespaced examples go to the test namespace. The class is cluster-scoped and shared by every
    // test on this control plane: it gets a unique name and loses its default-class annotation, so
    // no concurrent test sees an extra default class (annotations are not part of the schema).
    const manifests = docs.map(({ file, doc }) => {
      const copy = structuredClone(doc);
      if (copy.kind === 'VMSnapshotClass') {
        if (file === 'vmsnapshotclass.yaml') expect(copy.metadata.annotations?.[DEFAULT_CLASS_ANNOTATION]).toBe('true');
        if (copy.metadata.annotations) delete copy.metadata.annotations[DEFAULT_CLASS_ANNOTATION];
        copy.metadata.name = `${copy.metadata.name}-example-${RUN_ID}`;
        exampleClassNames.push(copy.metadata.name);
      } else {
        expect(copy.metadata.namespace).toBe('default'); // the examples are written for `default`
        copy.metadata.namespace = ns;
      }
      return { file, doc: copy };
    });
    const yaml = manifests.map(({ doc }) => `---\n${toYaml(doc)}`).join('');

    const applied = await kubectl(['apply', '--validate=strict', '-f', '-'], { input: yaml });
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
    expect(applied.stdout.trim().split('\n')).toHaveLength(manifests.length);
    expect(applied.stdout).not.toMatch(/unchanged|configured/);

    // A second apply is a no-op: nothing was pruned or rewritten by the server.
    const again = await kubectlOk(['apply', '--validate=strict', '-f', '-'], { input: yaml });
    expect(again.trim().split('\n').every((line) => line.endsWith(' unchanged'))).toBe(true);

    for (const { file, doc } of manifests) {
      const args = doc.kind === 'VMSnapshotClass' ? [] : ['-n', ns];
      // vm-pod.yaml is a core Pod (no node runs here: it stays Pending, which is all this checks).
      const resource = String(doc.apiVersion).startsWith('vmsnap.io/') ? `${doc.kind}.vmsnap.io` : String(doc.kind).toLowerCase();
      const stored = JSON.parse(await kubectlOk(['get', ...args, `${resource}/${doc.metadata.name}`, '-o', 'json'])) as Obj;
      const { apiVersion: _a, kind: _k, metadata: _m, ...fields } = doc;
      const { apiVersion: _sa, kind: _sk, metadata: _sm, ...storedFields } = stored;
      // Everything the example says is stored as written (server defaults may add to it).
      expect({ file, ...storedFields }).toMatchObject({ file, ...fields });
    }
  });
});

describe('documented defaults', () => {
  it('fills captureMode, afterSnapshot and failureDeadline of a minimal VMSnapshot, and nothing the class decides', async () => {
    const name = uniqueName('minimal');
    await kubectlOk(['apply', '-n', ns, '--validate=strict', '-f', '-'], {
      input: toYaml({ apiVersion: API_VERSION, kind: 'VMSnapshot', metadata: { name }, spec: { vmName: 'demo' } }),
    });
    const stored = JSON.parse(await kubectlOk(['get', '-n', ns, 'vmsnapshot', name, '-o', 'json'])) as Obj;
    // parallelism, directIO and deletionPolicy stay unset: the class, else the built-in defaults,
    // supply them when the operator reconciles (recorded in status.effective).
    expect(stored.spec).toEqual({
      vmName: 'demo',
      captureMode: DEFAULT_CAPTURE_MODE,
      afterSnapshot: DEFAULT_AFTER_SNAPSHOT,
      failureDeadline: DEFAULT_FAILURE_DEADLINE,
    });
    expect(stored.spec).toEqual({ vmName: 'demo', captureMode: 'Paused', afterSnapshot: 'Resume', failureDeadline: '10m' });
  });

  it('fills ifRunning, afterRestore and restoreMode of a minimal VMRestore, and leaves targetVMName to the snapshot', async () => {
    const name = uniqueName('minimal');
    await kubectlOk(['apply', '-n', ns, '--validate=strict', '-f', '-'], {
      input: toYaml({ apiVersion: API_VERSION, kind: 'VMRestore', metadata: { name }, spec: { snapshotName: 'demo-snapshot' } }),
    });
    const stored = JSON.parse(await kubectlOk(['get', '-n', ns, 'vmrestore', name, '-o', 'json'])) as Obj;
    expect(stored.spec).toEqual({
      snapshotName: 'demo-snapshot',
      ifRunning: DEFAULT_IF_RUNNING,
      afterRestore: DEFAULT_AFTER_RESTORE,
      restoreMode: DEFAULT_RESTORE_MODE,
      failureDeadline: DEFAULT_FAILURE_DEADLINE,
    });
    expect(stored.spec).toEqual({ snapshotName: 'demo-snapshot', ifRunning: 'Fail', afterRestore: 'Running', restoreMode: 'Eager', failureDeadline: '10m' });
  });

  it('keeps an empty VMSnapshotClass empty (its fields are overrides, not defaults)', async () => {
    const stored = await createOk('VMSnapshotClass', {
      apiVersion: API_VERSION,
      kind: 'VMSnapshotClass',
      metadata: { name: uniqueName('empty-class'), labels: { 'vmsnap-test-run': RUN_ID } },
    });
    const { apiVersion: _a, kind: _k, metadata: _m, ...fields } = stored;
    expect(fields).toEqual({});
  });

  it('ignores status sent on create (the status subresource owns it)', async () => {
    const stored = await createOk('VMSnapshot', { ...base('VMSnapshot'), status: { phase: 'Succeeded', readyToUse: true } });
    expect(stored.status).toBeUndefined();
  });
});

describe('refuses invalid objects, naming the field', () => {
  it('has a broad corpus', () => {
    expect(createCases.length + statusCases.length + updateCases.filter((c) => c.field).length).toBeGreaterThanOrEqual(90);
  });

  it.each(createCases.map((c) => [`${c.kind} ${c.field}: ${c.problem}`, c] as const))('%s', async (_title, c) => {
    let obj = withField(base(c.kind), c.set ?? c.field, c.value);
    for (const [dotted, value] of Object.entries(c.also ?? {})) obj = withField(obj, dotted, value);
    if (CLUSTER_SCOPED.has(c.kind)) obj = withField(obj, 'metadata.labels', { 'vmsnap-test-run': RUN_ID });
    expectRefusal(await create(c.kind, obj), c.field);
  });

  it.each(statusCases.map((c) => [`${c.kind} ${c.field}: ${c.problem}`, c] as const))('%s', async (_title, c) => {
    const obj = base(c.kind);
    if (CLUSTER_SCOPED.has(c.kind)) obj.metadata.labels = { 'vmsnap-test-run': RUN_ID };
    await createOk(c.kind, obj);
    expectRefusal(await mergePatch(c.kind, obj.metadata.name, { status: c.status }, 'status'), c.field);
  });

  it('accepts a well-formed status through the status subresource', async () => {
    const obj = await createOk('VMSnapshot', base('VMSnapshot'));
    const status = {
      phase: 'Succeeded',
      conditions: [{ ...condition, status: 'True', reason: 'Saved' }],
      observedGeneration: 1,
      nodeName: 'node-a',
      readyToUse: true,
      restoreSize: 1 << 30,
      progress: { bytesDone: 1 << 30, bytesTotal: 1 << 30, percent: 100 },
      startTime: '2025-01-01T00:00:00Z',
      completionTime: '2025-01-01T00:00:02Z',
      durationMs: 2000,
      vmPausedMs: 1900,
      file: { path: '/var/lib/vmsnap/snapshots/x/y.vmsnap', logicalBytes: 1 << 30, allocatedBytes: 1 << 20 },
      qemu: { version: '10.0.0', machine: 'pc-q35-10.0' },
    };
    const r = await mergePatch('VMSnapshot', obj.metadata.name, { status }, 'status');
    expect(r.status).toBe(200);
    expect((JSON.parse(r.body) as Obj).status).toEqual(status);
  });
});

describe('the snapshots of one VM', () => {
  it('are found with --field-selector spec.vmName (a selectable field), and a VMRestore may name the latest of them', async () => {
    const vm = `vm-${RUN_ID}`;
    const mine = [await createOk('VMSnapshot', withField(base('VMSnapshot'), 'spec.vmName', vm)), await createOk('VMSnapshot', withField(base('VMSnapshot'), 'spec.vmName', vm))];
    await createOk('VMSnapshot', withField(base('VMSnapshot'), 'spec.vmName', `other-${RUN_ID}`));
    const found = await kubectlOk(['get', '-n', ns, 'vmsnapshots.vmsnap.io', '--field-selector', `spec.vmName=${vm}`, '-o', 'name']);
    expect(found.trim().split('\n').sort()).toEqual(mine.map((s) => `vmsnapshot.vmsnap.io/${s.metadata.name}`).sort());
    const refused = await kubectl(['get', '-n', ns, 'vmsnapshots.vmsnap.io', '--field-selector', 'spec.className=x']);
    expect(refused.stderr).toMatch(/field label not supported: spec\.className/);

    const latest = await createOk('VMRestore', withField(withField(base('VMRestore'), 'spec.snapshotName', REMOVE), 'spec.latestSnapshotOf', vm));
    expect(latest.spec).toEqual({ latestSnapshotOf: vm, ifRunning: 'Fail', afterRestore: 'Running', restoreMode: 'Eager', failureDeadline: '10m' });
    const message = expectRefusal(await mergePatch('VMRestore', latest.metadata.name, { spec: { latestSnapshotOf: 'another' } }), 'spec.latestSnapshotOf');
    expect(message).toMatch(/latestSnapshotOf is immutable/);
    const wide = await kubectlOk(['get', '-n', ns, 'vmsr', latest.metadata.name, '-o', 'wide']);
    expect(wide.split('\n')[0]).toMatch(/\bLATESTOF\s+CHOSEN\b/);
    expect(wide.split('\n')[1]).toContain(vm);
  });
});

describe('terminal phases are final', () => {
  const phase = (p: string) => ({ status: { phase: p } });

  it.each(['VMSnapshot', 'VMRestore'] as const)('%s: a late Succeeded after Failed is refused, naming status.phase', async (kind) => {
    const obj = await createOk(kind, base(kind));
    const name = obj.metadata.name as string;
    // The ordinary path is open: Pending, InProgress, then the operator's deadline Failed.
    for (const p of ['Pending', 'InProgress', 'Failed']) expect((await mergePatch(kind, name, phase(p), 'status')).status).toBe(200);
    // The agent's Succeeded that outlived an API server outage arrives after the deadline.
    const late = await mergePatch(kind, name, { status: { phase: 'Succeeded', completionTime: '2030-01-01T00:00:00Z' } }, 'status');
    expect(expectRefusal(late, 'status.phase')).toMatch(/Succeeded and Failed are final/);
    expect(late.status).toBe(422);
    for (const p of ['Pending', 'InProgress']) expectRefusal(await mergePatch(kind, name, phase(p), 'status'), 'status.phase');
    expectRefusal(await mergePatch(kind, name, { status: { phase: null } }, 'status'), 'status.phase');
    // A finished object still takes the rest of its status (the agent's fileDeleted, residency).
    expect((await mergePatch(kind, name, { status: { nodeName: 'node-b' } }, 'status')).status).toBe(200);
    const stored = JSON.parse((await apiRequest(objectPath(kind, name), { admin: true })).body) as Obj;
    expect(stored.status).toMatchObject({ phase: 'Failed', nodeName: 'node-b' });
    expect(stored.status.completionTime).toBeUndefined();
  });

  it('a Succeeded snapshot stays Succeeded', async () => {
    const obj = await createOk('VMSnapshot', base('VMSnapshot'));
    expect((await mergePatch('VMSnapshot', obj.metadata.name, phase('Succeeded'), 'status')).status).toBe(200);
    expectRefusal(await mergePatch('VMSnapshot', obj.metadata.name, phase('Failed'), 'status'), 'status.phase');
    expect((await mergePatch('VMSnapshot', obj.metadata.name, { status: { fileDeleted: true } }, 'status')).status).toBe(200);
  });
});

describe('immutable fields', () => {
  const created = new Map<string, Obj>();

  async function fresh(c: UpdateCase): Promise<string> {
    const obj = base(c.kind);
    if (c.from === 'full') obj.spec = structuredClone(c.kind === 'VMSnapshot' ? snapshotFull : restoreFull);
    const stored = await createOk(c.kind, obj);
    created.set(obj.metadata.name, stored);
    return obj.metadata.name;
  }

  it.each(updateCases.map((c) => [`${c.kind} (${c.from}): ${c.change} is ${c.field ? 'refused' : 'accepted'}`, c] as const))(
    '%s',
    async (_title, c) => {
      const name = await fresh(c);
      const r = await mergePatch(c.kind, name, { spec: c.specPatch });
      if (c.field) {
        expect(expectRefusal(r, c.field)).toMatch(/immutable/);
      } else {
        expect(r.status).toBe(200);
        expect((JSON.parse(r.body) as Obj).spec).toMatchObject(c.specPatch);
      }
    },
  );

  it('tells a kubectl apply user which field cannot change', async () => {
    const name = uniqueName('apply');
    const manifest = (vmName: string) =>
      toYaml({ apiVersion: API_VERSION, kind: 'VMSnapshot', metadata: { name, namespace: ns }, spec: { ...snapshotFull, vmName } });
    await kubectlOk(['apply', '--validate=strict', '-f', '-'], { input: manifest('demo') });
    const changed = await kubectl(['apply', '--validate=strict', '-f', '-'], { input: manifest('other') });
    expect(changed.code).not.toBe(0);
    expect(changed.stderr).toMatch(/spec\.vmName: Forbidden: vmName is immutable/);

    const unknown = await kubectl(['apply', '--validate=strict', '-f', '-'], {
      input: `${manifest('demo')}  snapshotPath: /tmp/x\n`,
    });
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/unknown field "spec\.snapshotPath"/);
  });
});

describe('enums that replaced booleans', () => {
  it('stores the booleans as written (the operator reads them as the enum) and the enums too', async () => {
    const old = await createOk('VMSnapshot', withField(base('VMSnapshot'), 'spec.digests', true));
    expect(old.spec.digests).toBe(true);
    const now = await createOk('VMSnapshot', withField(base('VMSnapshot'), 'spec.digests', 'Record'));
    expect(now.spec.digests).toBe('Record');
    const restore = await createOk('VMRestore', withField(withField(base('VMRestore'), 'spec.verify', false), 'spec.prefetch', 'Background'));
    expect(restore.spec).toMatchObject({ verify: false, prefetch: 'Background' });
  });

  it('refuses another value naming the field and the allowed values', async () => {
    const message = expectRefusal(await create('VMSnapshot', withField(base('VMSnapshot'), 'spec.digests', 'Sha256')), 'spec.digests');
    expect(message).toMatch(/supported values: "None", "Record", "true", "false"/);
  });
});

describe('hibernation snapshots (status.hibernated)', () => {
  async function hibernation(extra: Obj = {}): Promise<string> {
    const obj = await createOk('VMSnapshot', { ...base('VMSnapshot'), spec: { vmName: 'demo', afterSnapshot: 'Stop', ...extra } });
    const name = obj.metadata.name as string;
    const marked = await mergePatch('VMSnapshot', name, { status: { phase: 'Succeeded', readyToUse: true, hibernated: true } }, 'status');
    expect(marked.status).toBe(200);
    return name;
  }
  const del = (name: string) => apiRequest(objectPath('VMSnapshot', name), { admin: true, method: 'DELETE' });

  it('refuses to delete one that holds a stopped VM\'s only state, naming the annotation that allows it', async () => {
    const name = await hibernation();
    const refused = await del(name);
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.body).message).toMatch(/metadata.annotations\[vmsnap.io\/allow-discard-hibernation\]: VMSnapshot .* holds the only state of VM demo/);
    // kubectl says the same, and the object is untouched (no deletionTimestamp: nothing to take back).
    const viaKubectl = await kubectl(['delete', '-n', ns, 'vmsnapshot', name, '--wait=false']);
    expect(viaKubectl.code).not.toBe(0);
    expect(viaKubectl.stderr).toMatch(/allow-discard-hibernation/);
    expect(JSON.parse((await apiRequest(objectPath('VMSnapshot', name), { admin: true })).body).metadata.deletionTimestamp).toBeUndefined();

    await kubectlOk(['annotate', '-n', ns, 'vmsnapshot', name, 'vmsnap.io/allow-discard-hibernation=true']);
    expect((await del(name)).status).toBe(200);
  });

  it('allows it with deletionPolicy Retain (the file stays), and once the VM ran again (hibernated false)', async () => {
    const retained = await hibernation({ deletionPolicy: 'Retain' });
    expect((await del(retained)).status).toBe(200);
    const woke = await hibernation();
    expect((await mergePatch('VMSnapshot', woke, { status: { hibernated: false } }, 'status')).status).toBe(200);
    expect((await del(woke)).status).toBe(200);
  });

  it('an annotation other than "true" does not allow it', async () => {
    const name = await hibernation();
    await kubectlOk(['annotate', '-n', ns, 'vmsnapshot', name, 'vmsnap.io/allow-discard-hibernation=yes']);
    expect((await del(name)).status).toBe(403);
  });
});

describe('kubectl get', () => {
  it('prints the documented columns and finds everything through the vmsnap category', async () => {
    const vms = await kubectlOk(['get', '-n', ns, 'vmss']);
    expect(vms.split('\n')[0]!.trim().split(/\s+/)).toEqual(['NAME', 'VM', 'PHASE', 'READY', 'SIZE', 'DURATION', 'THROUGHPUT', 'NODE', 'AGE']);
    const vmr = await kubectlOk(['get', '-n', ns, 'vmsr']);
    expect(vmr.split('\n')[0]).toMatch(/^NAME\s+SNAPSHOT\s+TARGET\s+PHASE\s+MODE\s+DURATION\s+DOWNTIME\s+NODE\s+AGE$/);
    const all = await kubectlOk(['get', '-n', ns, 'vmsnap', '-o', 'name']);
    expect(all).toMatch(/^vmsnapshot\.vmsnap\.io\/demo-snapshot$/m);
    expect(all).toMatch(/^vmrestore\.vmsnap\.io\/demo-restore$/m);
  });
});
