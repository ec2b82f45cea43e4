import type { VMRestore, VMSnapshot } from '../api/index.js';
import { reconcileRestore } from './reconcile-restore.js';
import { latestSucceededSnapshot, restoreSource } from './restore-source.js';
import type { World } from './world.js';

const now = new Date('2026-11-21T12:00:00Z');

function snap(name: string, completionTime: string, over: { vmName?: string; namespace?: string; phase?: string; deleting?: boolean; ready?: boolean } = {}): VMSnapshot {
  return {
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMSnapshot',
    metadata: { name, namespace: over.namespace ?? 'a', creationTimestamp: '2026-11-21T10:00:00Z', ...(over.deleting ? { deletionTimestamp: '2026-11-21T11:00:00Z' } : {}) },
    spec: { vmName: over.vmName ?? 'vm1' },
    status: { phase: over.phase ?? 'Succeeded', readyToUse: over.ready ?? true, completionTime, nodeName: 'node-a', effective: { channels: 4 } },
  } as VMSnapshot;
}

const latest = (status: Record<string, unknown> = {}): VMRestore =>
  ({
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMRestore',
    metadata: { name: 'r', namespace: 'a', uid: 'uid-r', generation: 1, creationTimestamp: '2026-11-21T11:59:50Z' },
    spec: { latestSnapshotOf: 'vm1', ifRunning: 'Replace', afterRestore: 'Running', restoreMode: 'Eager' },
    status,
  }) as VMRestore;

const world = (snapshots: VMSnapshot[]): World => ({
  snapshots,
  restores: [],
  pods: [],
  classes: [],
  inventories: [{ apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMInventory', metadata: { name: 'node-a' }, status: { nodeName: 'node-a', updatedTime: '2026-11-21T11:59:59Z', vms: [] } }] as never,
  recentlyAssigned: new Map(),
});

describe('latestSucceededSnapshot', () => {
  it("picks the VM's newest Succeeded, ready snapshot of this namespace", () => {
    const all = [
      snap('old', '2026-11-21T09:00:00Z'),
      snap('new', '2026-11-21T11:00:00Z'),
      snap('newer-failed', '2026-11-21T11:30:00Z', { phase: 'Failed' }),
      snap('newer-not-ready', '2026-11-21T11:31:00Z', { ready: false }),
      snap('newer-deleting', '2026-11-21T11:32:00Z', { deleting: true }),
      snap('other-vm', '2026-11-21T11:33:00Z', { vmName: 'vm2' }),
      snap('other-namespace', '2026-11-21T11:34:00Z', { namespace: 'b' }),
    ];
    expect(latestSucceededSnapshot(all, 'a', 'vm1')?.metadata.name).toBe('new');
    expect(latestSucceededSnapshot(all, 'a', 'vm3')).toBeUndefined();
  });

  it('breaks a tie on completionTime by name, so the choice does not depend on list order', () => {
    const a = snap('a', '2026-11-21T11:00:00Z');
    const b = snap('b', '2026-11-21T11:00:00Z');
    expect(latestSucceededSnapshot([a, b], 'a', 'vm1')?.metadata.name).toBe('b');
    expect(latestSucceededSnapshot([b, a], 'a', 'vm1')?.metadata.name).toBe('b');
  });
});

describe('a VMRestore of the latest snapshot', () => {
  it('records its choice first, with an event, before doing anything else', () => {
    const d = reconcileRestore(latest(), world([snap('old', '2026-11-21T09:00:00Z'), snap('new', '2026-11-21T11:00:00Z')]), now);
    expect(d.status).toEqual({ snapshotName: 'new' });
    expect(d.events).toEqual([{ type: 'Normal', reason: 'SnapshotChosen', message: expect.stringContaining('"new", the newest Succeeded snapshot of VM "vm1"') }]);
    expect(d.metadata).toBeUndefined();
  });

  it('keeps the recorded choice when a newer snapshot appears, and restores it', () => {
    const snapshots = [snap('new', '2026-11-21T11:00:00Z'), snap('newest', '2026-11-21T11:59:00Z')];
    expect(restoreSource(latest({ snapshotName: 'new' }), snapshots)).toEqual({ kind: 'named', name: 'new', field: 'status.snapshotName' });
    const d = reconcileRestore(latest({ snapshotName: 'new' }), world(snapshots), now);
    expect(d.status).toMatchObject({ phase: 'Pending', nodeName: 'node-a', effective: { snapshotName: 'new', sourceVMName: 'vm1', targetVMName: 'vm1' } });
  });

  it('waits, saying for what, while the VM has no Succeeded snapshot', () => {
    const d = reconcileRestore(latest(), world([snap('failed', '2026-11-21T11:00:00Z', { phase: 'Failed' })]), now);
    expect(d.status).toMatchObject({
      phase: 'Pending',
      conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'SnapshotNotFound', message: 'waiting for a Succeeded VMSnapshot of VM "vm1" (spec.latestSnapshotOf) in namespace "a"' })]),
    });
  });
});
