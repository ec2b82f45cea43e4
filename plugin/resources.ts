// The objects `kubectl vmsnap` creates: ordinary VMSnapshots and VMRestores, checked against the
// API's own schemas, so that `--dry-run -o yaml` prints what a user could apply by hand.
import {
  API_VERSION,
  VMRESTORE_KIND,
  VMSNAPSHOT_KIND,
  VMRestoreSchema,
  VMSnapshotSchema,
  formatZodError,
  type VMRestoreInput,
  type VMSnapshotInput,
} from '../api/index.js';
import type { Invocation } from './args.js';

/** "20261207-183005": a UTC time that sorts and fits a name. */
export function stamp(now: Date): string {
  return now.toISOString().replace(/\.\d+Z$/, '').replace(/[-:]/g, '').replace('T', '-');
}

/** `<base>-<stamp>`, the base cut so the whole stays a DNS-1123 subdomain of at most 253. */
export function defaultName(base: string, now: Date): string {
  const suffix = `-${stamp(now)}`;
  return `${base.slice(0, 253 - suffix.length).replace(/[-.]+$/, '')}${suffix}`;
}

function checked<T>(schema: { safeParse(v: unknown): { success: boolean; error?: unknown } }, obj: T, what: string): T {
  const r = schema.safeParse(obj);
  if (!r.success) throw new Error(`the ${what} would be refused: ${formatZodError(r.error as never)}`);
  return obj;
}

/** save (the VM keeps running) and hibernate (afterSnapshot: Stop). */
export function buildSnapshot(inv: Invocation, namespace: string, now: Date): VMSnapshotInput {
  const vm = inv.target!;
  const hibernate = inv.command === 'hibernate';
  const spec: VMSnapshotInput['spec'] = { vmName: vm };
  if (inv.className) spec.className = inv.className;
  if (inv.channels) spec.parallelism = { channels: inv.channels };
  if (inv.live) spec.captureMode = 'Live';
  if (hibernate) spec.afterSnapshot = 'Stop';
  if (inv.failureDeadline) spec.failureDeadline = inv.failureDeadline;
  return checked(
    VMSnapshotSchema,
    { apiVersion: API_VERSION, kind: VMSNAPSHOT_KIND, metadata: { name: inv.name ?? defaultName(vm, now), namespace }, spec },
    'VMSnapshot',
  );
}

/** restore SNAPSHOT [--as NAME] and wake VM (its newest Succeeded snapshot). */
export function buildRestore(inv: Invocation, namespace: string, now: Date): VMRestoreInput {
  const target = inv.target!;
  const spec: VMRestoreInput['spec'] = inv.command === 'wake' ? { latestSnapshotOf: target } : { snapshotName: target };
  if (inv.as) spec.targetVMName = inv.as;
  if (inv.lazy) spec.restoreMode = 'Lazy';
  if (inv.replace) spec.ifRunning = 'Replace';
  if (inv.failureDeadline) spec.failureDeadline = inv.failureDeadline;
  const base = inv.command === 'wake' ? `${target}-wake` : inv.as ? `${inv.as}-from-${target}` : `${target}-restore`;
  return checked(
    VMRestoreSchema,
    { apiVersion: API_VERSION, kind: VMRESTORE_KIND, metadata: { name: inv.name ?? defaultName(base, now), namespace }, spec },
    'VMRestore',
  );
}

export type Built = { resource: 'vmSnapshot'; object: VMSnapshotInput } | { resource: 'vmRestore'; object: VMRestoreInput };

export function build(inv: Invocation, namespace: string, now: Date): Built {
  if (inv.command === 'save' || inv.command === 'hibernate') return { resource: 'vmSnapshot', object: buildSnapshot(inv, namespace, now) };
  if (inv.command === 'wake' || inv.command === 'restore') return { resource: 'vmRestore', object: buildRestore(inv, namespace, now) };
  throw new Error(`"${inv.command}" creates nothing`);
}
