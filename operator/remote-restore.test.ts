import type { VMInventory, VMRestore, VMSnapshot } from '../api/index.js';
import { reconcileRestore } from './reconcile-restore.js';
import { remoteRestoreCheck, whereVMRuns } from './remote-restore.js';
import type { PodView } from './vm-pod-record.js';
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
const restore = (nodeName?: string, spec: Partial<VMRestore['spec']> = {}): VMRestore =>
  ({
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMRestore',
    metadata: { name: 'r', namespace: 'a', uid: 'uid-r', creationTimestamp: '2026-11-21T11:59:50Z' },
    spec: { snapshotName: 'snap', targetVMName: 'vm2', ifRunning: 'Fail', afterRestore: 'Running', restoreMode: 'Eager', ...(nodeName ? { nodeName } : {}), ...spec },
  }) as VMRestore;
type VM = { name: string; state?: string; namespace?: string };
const inv = (node: string, vms: VM[] = [], updatedTime = '2026-11-21T11:59:59Z'): VMInventory =>
  ({
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMInventory',
    metadata: { name: node },
    status: { nodeName: node, updatedTime, vms: vms.map((v) => ({ namespace: 'a', qmpSocket: `/vms/a/${v.name}/qmp.sock`, state: 'running', ...v })) },
  }) as unknown as VMInventory;
const world = (s: VMSnapshot, over: Partial<World> = {}): World => ({ snapshots: [s], restores: [], pods: [], classes: [], inventories: [inv('node-a'), inv('node-b')], recentlyAssigned: new Map(), ...over });
const vmPod = (name: string, node: string | undefined, over: { vm?: string; deleting?: boolean; namespace?: string } = {}): PodView => ({
  metadata: {
    name,
    namespace: over.namespace ?? 'a',
    uid: `pod-${name}`,
    labels: { 'vmsnap.io/vm': over.vm ?? 'vm1' },
    creationTimestamp: '2026-11-21T11:00:00Z',
    ...(over.deleting ? { deletionTimestamp: '2026-11-21T11:59:00Z' } : {}),
  },
  spec: { ...(node ? { nodeName: node } : {}), containers: [{ name: 'vm', image: 'vm:1', volumeMounts: [{ name: 'vmsnap-run', mountPath: '/run/vmsnap' }] }] },
  status: { phase: 'Running' },
});
const progressing = (reason: string, message: RegExp) => ({
  phase: 'Pending',
  conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason, message: expect.stringMatching(message) })]),
});

describe('restores on another node (spec.nodeName)', () => {
  it("runs on the snapshot's node without nodeName or when it names that node", () => {
    expect(remoteRestoreCheck(restore(), snap({}))).toEqual({ kind: 'ok', node: 'node-a', where: 'on node node-a' });
    expect(remoteRestoreCheck(restore('node-a'), snap({}))).toEqual({ kind: 'ok', node: 'node-a', where: 'on node node-a' });
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

describe('where the target VM is (whereVMRuns)', () => {
  const t = now.getTime();
  const w = (over: Partial<World>) => world(snap({}), over);

  it('is nowhere without live pods or a QEMU up in a live inventory', () => {
    expect(whereVMRuns(w({}), 'a', 'vm1', t)).toEqual({ kind: 'nowhere' });
    // Stopped or unreachable, another namespace, an inventory of an agent gone for minutes, a pod being deleted.
    const inventories = [inv('node-a', [{ name: 'vm1', state: 'stopped' }, { name: 'vm1', namespace: 'b' }]), inv('node-b', [{ name: 'vm1', state: 'unreachable' }]), inv('node-c', [{ name: 'vm1' }], '2026-11-21T11:50:00Z')];
    expect(whereVMRuns(w({ inventories, pods: [vmPod('vm1', 'node-b', { deleting: true }), vmPod('vm1', 'node-b', { namespace: 'b' })] }), 'a', 'vm1', t)).toEqual({ kind: 'nowhere' });
  });

  it('is the node of its live pods, whatever the inventory says (a pod whose launcher has no QEMU still holds the VM)', () => {
    const inventories = [inv('node-a', [{ name: 'vm1' }]), inv('node-b', [{ name: 'vm1', state: 'stopped' }])];
    expect(whereVMRuns(w({ inventories, pods: [vmPod('vm1', 'node-b'), vmPod('vm1-old', 'node-a', { deleting: true })] }), 'a', 'vm1', t)).toEqual({ kind: 'node', node: 'node-b', by: 'pods' });
    // A pod still waiting for the scheduler beside a bound one: the bound one says where.
    expect(whereVMRuns(w({ pods: [vmPod('vm1', 'node-b'), vmPod('vm1-2', undefined)] }), 'a', 'vm1', t)).toEqual({ kind: 'node', node: 'node-b', by: 'pods' });
  });

  it('is spread when its live pods are bound to several nodes, and unscheduled when none is bound', () => {
    expect(whereVMRuns(w({ pods: [vmPod('vm1', 'node-b'), vmPod('vm1-2', 'node-a')] }), 'a', 'vm1', t)).toEqual({ kind: 'spread', nodes: ['node-a', 'node-b'], by: 'pods' });
    expect(whereVMRuns(w({ pods: [vmPod('vm1', undefined)] }), 'a', 'vm1', t)).toEqual({ kind: 'unscheduled', pod: 'vm1' });
  });

  it('is, for a VM without pods, the node whose inventory has its QEMU up; several such nodes are spread', () => {
    expect(whereVMRuns(w({ inventories: [inv('node-a'), inv('node-b', [{ name: 'vm1', state: 'paused' }])] }), 'a', 'vm1', t)).toEqual({ kind: 'node', node: 'node-b', by: 'inventory' });
    expect(whereVMRuns(w({ inventories: [inv('node-a', [{ name: 'vm1' }]), inv('node-b', [{ name: 'vm1' }])] }), 'a', 'vm1', t)).toEqual({ kind: 'spread', nodes: ['node-a', 'node-b'], by: 'inventory' });
  });

  it("is stale while the inventory that has it up predates the VM's last operation", () => {
    const hibernation = { ...snap({ completionTime: '2026-11-21T11:59:59.500Z' }), spec: { vmName: 'vm1' } } as VMSnapshot;
    const inventories = [inv('node-a'), inv('node-b', [{ name: 'vm1' }])];
    expect(whereVMRuns({ ...w({ inventories }), snapshots: [hibernation] }, 'a', 'vm1', t)).toEqual({ kind: 'stale', node: 'node-b' });
  });
});

describe('restores without spec.nodeName go where the target VM is', () => {
  const up = (node: string, name = 'vm1') => [inv('node-a'), inv('node-b'), inv(node, [{ name }])];
  const replace = (spec: Partial<VMRestore['spec']> = {}) => restore(undefined, { targetVMName: undefined, ifRunning: 'Replace', ...spec });

  it("runs on the snapshot's node when the VM runs nowhere or there", () => {
    expect(reconcileRestore(replace(), world(snap({ upload: { phase: 'Uploaded' } })), now).status).toMatchObject({ phase: 'Pending', nodeName: 'node-a' });
    const there = reconcileRestore(replace(), world(snap({}), { inventories: up('node-a') }), now);
    expect(there.status).toMatchObject({ phase: 'Pending', nodeName: 'node-a' });
    expect(there.events[0]!.message).toMatch(/replacing the running VM\) on node node-a$/);
  });

  it('runs on the node where the VM runs, fetching the uploaded snapshot, and says so', () => {
    const d = reconcileRestore(replace(), world(snap({ upload: { phase: 'Uploaded' } }), { inventories: up('node-b') }), now);
    expect(d.status).toMatchObject({ phase: 'Pending', nodeName: 'node-b', effective: { targetVMName: 'vm1' } });
    expect(d.metadata).toMatchObject({ labels: { 'vmsnap.io/node': 'node-b' } });
    expect(d.events).toEqual([
      expect.objectContaining({ reason: 'Assigned', message: expect.stringMatching(/replacing the running VM\) on node node-b, where VM "vm1" runs; fetching VMSnapshot "snap" from its repository$/) }),
    ]);
    // A copy (spec.targetVMName) goes where the VM of that name runs.
    expect(reconcileRestore(replace({ targetVMName: 'vm2' }), world(snap({ upload: { phase: 'Uploaded' } }), { inventories: up('node-b', 'vm2') }), now).status).toMatchObject({ nodeName: 'node-b' });
    // ifRunning Fail still refuses the running VM, wherever it runs.
    expect(reconcileRestore(replace({ ifRunning: 'Fail' }), world(snap({ upload: { phase: 'Uploaded' } }), { inventories: up('node-b') }), now).status).toMatchObject({
      phase: 'Failed',
      error: { message: expect.stringMatching(/VM "vm1" is running on node node-b; set spec.ifRunning: Replace/) },
    });
  });

  it('waits while the upload runs, and fails naming spec.nodeName and the repository when the snapshot cannot leave its node', () => {
    expect(reconcileRestore(replace(), world(snap({ upload: { phase: 'Uploading' } }), { inventories: up('node-b') }), now).status).toMatchObject(
      progressing('WaitingForSnapshot', /uploaded to its repository before restoring it on node node-b, where VM "vm1" runs/),
    );
    expect(reconcileRestore(replace(), world(snap({ effective: { channels: 4 } }), { inventories: up('node-b') }), now).status).toMatchObject({
      phase: 'Failed',
      error: {
        message:
          'VMSnapshot "snap" is on node node-a and its class has no repository: it cannot be restored on node node-b, where VM "vm1" runs (spec.nodeName is not set, ' +
          'so a restore goes where its target VM runs): stop VM "vm1" on node node-b to restore it on node node-a, or restore a copy (spec.targetVMName)',
      },
    });
    expect(reconcileRestore(replace(), world(snap({ upload: { phase: 'Failed', message: 'the bucket does not exist' } }), { inventories: up('node-b') }), now).status).toMatchObject({
      phase: 'Failed',
      error: { message: expect.stringMatching(/failed to upload \(the bucket does not exist\): it cannot be restored on node node-b, where VM "vm1" runs \(spec.nodeName is not set/) },
    });
  });

  it('spec.nodeName wins over where the VM runs', () => {
    const d = reconcileRestore(replace({ nodeName: 'node-a' }), world(snap({ upload: { phase: 'Uploaded' } }), { inventories: up('node-b') }), now);
    expect(d.status).toMatchObject({ phase: 'Failed', error: { message: 'VM "vm1" runs on node node-b but the restore would run on node node-a' } });
    expect(remoteRestoreCheck(restore('node-c'), snap({ upload: { phase: 'Uploaded' } }), { name: 'vm2', where: { kind: 'node', node: 'node-b', by: 'inventory' } })).toEqual({
      kind: 'ok',
      node: 'node-c',
      where: 'on node node-c (spec.nodeName); fetching VMSnapshot "snap" from its repository',
    });
  });

  describe("a VM pod's snapshot", () => {
    const record = { name: 'vm1', uid: 'pod-vm1', labels: { 'vmsnap.io/vm': 'vm1' }, spec: vmPod('vm1', 'node-a').spec! };
    const podSnap = (status: Record<string, unknown>) => snap({ vmPod: record, ...status });

    it('is restored in place into its pod on the node of the pod, fetched from the repository', () => {
      const d = reconcileRestore(replace(), world(podSnap({ upload: { phase: 'Uploaded' } }), { pods: [vmPod('vm1', 'node-b')] }), now);
      expect(d.status).toMatchObject({ phase: 'Pending', nodeName: 'node-b', effective: { targetVMName: 'vm1', copy: false } });
      expect(d.pod).toBeUndefined();
      expect(d.events[0]!.message).toMatch(/into its VM pod \(.*\) on node node-b, where VM "vm1" runs; fetching VMSnapshot "snap" from its repository$/);
    });

    it('waits for an unscheduled pod and fails when its pods are on several nodes', () => {
      expect(reconcileRestore(replace(), world(podSnap({ upload: { phase: 'Uploaded' } }), { pods: [vmPod('vm1', undefined)] }), now).status).toMatchObject(
        progressing('WaitingForPod', /^waiting for pod vm1 of VM "vm1" to be scheduled/),
      );
      expect(reconcileRestore(replace(), world(podSnap({ upload: { phase: 'Uploaded' } }), { pods: [vmPod('vm1', 'node-b'), vmPod('vm1-2', 'node-c')] }), now).status).toMatchObject({
        phase: 'Failed',
        error: { message: 'VM "vm1" has live pods on nodes node-b, node-c: a restore without spec.nodeName runs on the one node of its target VM; delete its pods on all but one node, or set spec.nodeName' },
      });
    });

    it('wakes a VM whose pod is gone in a new pod on the snapshot node', () => {
      const d = reconcileRestore(replace(), world(podSnap({ upload: { phase: 'Uploaded' } })), now);
      expect(d.pod).toMatchObject({ create: { metadata: { name: 'vm1' }, spec: { nodeName: 'node-a' } } });
    });
  });
});
