import { SNAPSHOT_FINALIZER, type VMInventory, type VMSnapshot } from '../api/index.js';
import { nodeState } from './node-loss.js';
import { reconcileSnapshot } from './reconcile-snapshot.js';
import type { World } from './world.js';

const now = new Date('2026-12-07T12:00:00Z');
const ago = (s: number) => new Date(now.getTime() - s * 1000).toISOString();
const grace = { nodeLossGraceMs: 600_000 };
const repository = { endpoint: 'http://127.0.0.1:9000', bucket: 'snaps', credentialsSecret: 's3' };

const inventory = (updatedTime: string): VMInventory => ({ metadata: { name: 'node-a' }, status: { nodeName: 'node-a', updatedTime, vms: [] } }) as unknown as VMInventory;
const world = (inventories: VMInventory[]): World => ({ snapshots: [], restores: [], classes: [], inventories, pods: [], recentlyAssigned: new Map() });

function deleting(status: Record<string, unknown>, deletionPolicy = 'Delete'): VMSnapshot {
  return {
    metadata: { name: 's', namespace: 'a', uid: 'u1', finalizers: [SNAPSHOT_FINALIZER], deletionTimestamp: ago(30), labels: { 'vmsnap.io/vm': 'vm1' } },
    spec: { vmName: 'vm1' },
    status: { phase: 'Succeeded', nodeName: 'node-a', file: { path: '/snaps/a/s-u1.vms' }, effective: { channels: 4, deletionPolicy, repository }, ...status },
  } as unknown as VMSnapshot;
}

describe('nodeState', () => {
  it('is present while its agent renewed the inventory within the grace period, lost after', () => {
    expect(nodeState(world([inventory(ago(10))]), 'node-a', now.getTime(), 600_000, 0)).toEqual({ kind: 'present', lostInMs: 590_001 });
    const lost = nodeState(world([inventory(ago(601))]), 'node-a', now.getTime(), 600_000, 0);
    expect(lost).toEqual({ kind: 'lost', message: expect.stringMatching(/node node-a is lost: its agent last renewed VMInventory node-a at 2026-12-07T11:49:59.000Z, longer ago than the grace period \(600 s\)/) });
  });
  it('counts a node that never published an inventory from the fallback (the deletion)', () => {
    expect(nodeState(world([]), 'node-a', now.getTime(), 600_000, now.getTime() - 30_000).kind).toBe('present');
    expect(nodeState(world([]), 'node-a', now.getTime(), 600_000, now.getTime() - 700_000)).toMatchObject({ kind: 'lost', message: expect.stringMatching(/no agent has published/) });
  });
});

describe('deleting a VMSnapshot', () => {
  it('waits for a present node to remove the file, then removes the repository copy and releases', () => {
    const live = world([inventory(ago(5))]);
    expect(reconcileSnapshot(deleting({ upload: { phase: 'Uploaded', prefix: 'a/s-u1/' } }), live, now, grace)).toEqual({ events: [], requeueAfterMs: 2000 });
    const d = reconcileSnapshot(deleting({ fileDeleted: true, upload: { phase: 'Uploaded', prefix: 'a/s-u1/' } }), live, now, grace);
    expect(d.metadata).toEqual({ finalizers: [] });
    expect(d.remoteDelete).toEqual({ repository, prefix: 'a/s-u1/' });
    expect(d.events[0]).toMatchObject({ reason: 'Released', message: expect.stringContaining('and its copy in bucket snaps at a/s-u1/') });
  });
  it('waits while the agent cancels a running upload, and never touches the copy under Retain', () => {
    const live = world([inventory(ago(5))]);
    expect(reconcileSnapshot(deleting({ fileDeleted: true, upload: { phase: 'Uploading' } }), live, now, grace).metadata).toBeUndefined();
    const retained = reconcileSnapshot(deleting({ upload: { phase: 'Uploaded' } }, 'Retain'), live, now, grace);
    expect(retained.metadata).toEqual({ finalizers: [] });
    expect(retained.remoteDelete).toBeUndefined();
  });
  it('no longer waits for a node lost past the grace period: NodeLost, the copy removed', () => {
    const silent = world([inventory(ago(700))]);
    const d = reconcileSnapshot(deleting({ upload: { phase: 'Uploaded' } }), silent, now, grace);
    expect(d.metadata).toEqual({ finalizers: [] });
    expect(d.remoteDelete).toEqual({ repository, prefix: 'a/s-u1/' }); // computed when status.upload has no prefix
    expect(d.events[0]).toMatchObject({ type: 'Warning', reason: 'NodeLost', message: expect.stringMatching(/node node-a is lost: .*released; \/snaps\/a\/s-u1.vms is left on that node; removed its copy in bucket snaps/) });
    // An upload the lost agent left Uploading, and a save it left InProgress, no longer block either.
    expect(reconcileSnapshot(deleting({ upload: { phase: 'Uploading' } }), silent, now, grace).metadata).toEqual({ finalizers: [] });
    expect(reconcileSnapshot(deleting({ phase: 'InProgress', upload: undefined }), silent, now, grace)).toMatchObject({ metadata: { finalizers: [] }, events: [{ reason: 'NodeLost' }] });
  });
  it('within the grace period a silent node still blocks, looked at again by the time it would be lost', () => {
    const d = reconcileSnapshot(deleting({}), world([inventory(ago(599))]), now, grace);
    expect(d.metadata).toBeUndefined();
    expect(d.requeueAfterMs).toBe(1001);
  });
});
