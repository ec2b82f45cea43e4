import type { VMInventory, VMRestore, VMSnapshot } from '../api/index.js';
import { reconcileRestore } from './reconcile-restore.js';
import { remoteRestoreCheck } from './remote-restore.js';
import type { World } from './world.js';

const now = new Date('2026-11-21T12:00:00Z');
const repository = { endpoint: 'http://127.0.0.1:8333', bucket: 'snaps', credentialsSecret: 's3' };

function snap(status: Record<string, unknown>): VMSnapshot {
  return {
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMSnapshot',
    metadata: { name: 'snap', namespace: 'a', uid: 'u1', creationTimestamp: '2026-11-21T11:00:00Z' },
    spec: { vmName: 'vm1' },
    status: { phase: 'Succeeded', readyToUse: true, nodeName: 'node-a', completionTime: '2026-11-21T11:00:00Z', effective: { channels: 4, repository }, ...status },
  } as unknown as VMSnapshot;
}
const restore = (nodeName?: string): VMRestore =>
  ({
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMRestore',
    metadata: { name: 'r', namespace: 'a', uid: 'uid-r', creationTimestamp: '2026-11-21T11:59:50Z' },
    spec: { snapshotName: 'snap', targetVMName: 'vm2', ifRunning: 'Fail', afterRestore: 'Running', restoreMode: 'Eager', ...(nodeName ? { nodeName } : {}) },
  }) as VMRestore;
const inv = (node: string): VMInventory =>
  ({ apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMInventory', metadata: { name: node }, status: { nodeName: node, updatedTime: '2026-11-21T11:59:59Z', vms: [] } }) as unknown as VMInventory;
const world = (s: VMSnapshot): World => ({ snapshots: [s], restores: [], pods: [], classes: [], inventories: [inv('node-a'), inv('node-b')], recentlyAssigned: new Map() });

describe('restores on another node (spec.nodeName)', () => {
  it("runs on the snapshot's node without nodeName or when it names that node", () => {
    expect(remoteRestoreCheck(restore(), snap({}))).toEqual({ kind: 'ok', node: 'node-a' });
    expect(remoteRestoreCheck(restore('node-a'), snap({}))).toEqual({ kind: 'ok', node: 'node-a' });
  });

  it('goes to the named node once the snapshot is uploaded', () => {
    const d = reconcileRestore(restore('node-b'), world(snap({ upload: { phase: 'Uploaded' } })), now);
    expect(d.status).toMatchObject({ phase: 'Pending', nodeName: 'node-b' });
    expect(d.metadata).toMatchObject({ labels: { 'vmsnap.io/node': 'node-b' } });
  });

  it('waits while the upload runs', () => {
    const d = reconcileRestore(restore('node-b'), world(snap({ upload: { phase: 'Uploading' } })), now);
    expect(d.status).toMatchObject({ phase: 'Pending', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'WaitingForSnapshot', message: expect.stringContaining('uploaded') })]) });
    expect(d.status?.nodeName).toBeUndefined();
  });

  it('fails, naming the field, when the snapshot cannot leave its node', () => {
    const noRepo = snap({ effective: { channels: 4 } });
    expect(reconcileRestore(restore('node-b'), world(noRepo), now).status).toMatchObject({
      phase: 'Failed',
      error: { message: expect.stringMatching(/no repository.*spec\.nodeName/) },
    });
    const failed = snap({ upload: { phase: 'Failed', message: 'the bucket does not exist' } });
    expect(reconcileRestore(restore('node-b'), world(failed), now).status).toMatchObject({
      phase: 'Failed',
      error: { message: expect.stringContaining('the bucket does not exist') },
    });
  });
});
