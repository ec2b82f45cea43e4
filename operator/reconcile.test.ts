import type { VMInventory, VMRestore, VMSnapshot, VMSnapshotClass } from '../api/index.js';
import { SNAPSHOT_FINALIZER, VM_LABEL } from '../api/index.js';
import { NODE_LABEL } from '../api/protocol.js';
import { reconcileRestore } from './reconcile-restore.js';
import { reconcileSnapshot } from './reconcile-snapshot.js';
import type { PodView } from './vm-pod-record.js';
import type { World } from './world.js';

function pod(name: string, over: { vm?: string; owner?: string; phase?: string; uid?: string } = {}): PodView {
  return {
    metadata: {
      name,
      namespace: 'a',
      uid: over.uid ?? `pod-${name}`,
      resourceVersion: '7',
      labels: { 'vmsnap.io/vm': over.vm ?? name },
      creationTimestamp: '2026-11-21T11:59:00Z',
      ...(over.owner ? { ownerReferences: [{ apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMRestore', name: 'r', uid: over.owner, controller: true }] } : {}),
    },
    spec: { nodeName: 'node-a', containers: [{ name: 'vm', image: 'vm:1', volumeMounts: [{ name: 'vmsnap-run', mountPath: '/run/vmsnap' }] }] },
    status: { phase: over.phase ?? 'Running' },
  };
}

const now = new Date('2026-11-21T12:00:00Z');
const earlier = '2026-11-21T11:59:50Z';

function snapshot(name: string, over: Partial<VMSnapshot> & { spec?: Partial<VMSnapshot['spec']> } = {}): VMSnapshot {
  return {
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMSnapshot',
    ...over,
    metadata: { name, namespace: 'a', uid: `uid-${name}`, generation: 1, creationTimestamp: earlier, finalizers: [SNAPSHOT_FINALIZER], resourceVersion: '1', labels: { [VM_LABEL]: over.spec?.vmName ?? 'vm1' }, ...over.metadata },
    spec: { vmName: 'vm1', captureMode: 'Paused', afterSnapshot: 'Resume', failureDeadline: '10m', ...over.spec },
  } as VMSnapshot;
}

function inventory(node: string, vms: Array<{ namespace: string; name: string; state?: string }>, updatedTime = '2026-11-21T11:59:59Z'): VMInventory {
  return {
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMInventory',
    metadata: { name: node },
    status: { nodeName: node, updatedTime, vms: vms.map((v) => ({ qmpSocket: `/vms/${v.namespace}/${v.name}/qmp.sock`, state: 'running', memoryBytes: 1 << 30, ...v })) },
  } as VMInventory;
}

function world(over: Partial<World> = {}): World {
  return { snapshots: [], restores: [], classes: [], inventories: [inventory('node-a', [{ namespace: 'a', name: 'vm1' }])], pods: [], recentlyAssigned: new Map(), ...over };
}

describe('reconcileSnapshot', () => {
  it('adds the finalizer first', () => {
    const d = reconcileSnapshot(snapshot('s', { metadata: { finalizers: [], labels: { [VM_LABEL]: 'vm1' } } as never }), world(), now);
    expect(d.metadata).toEqual({ finalizers: [SNAPSHOT_FINALIZER] });
    expect(d.status).toBeUndefined();
  });

  it('labels the snapshot with its VM, and corrects a wrong label, before anything else', () => {
    const fresh = reconcileSnapshot(snapshot('s', { metadata: { finalizers: [], labels: {} } as never }), world(), now);
    expect(fresh.metadata).toEqual({ finalizers: [SNAPSHOT_FINALIZER], labels: { [VM_LABEL]: 'vm1' } });
    const mislabelled = snapshot('s', { metadata: { labels: { [VM_LABEL]: 'someone-else', team: 'x' } } as never, status: { phase: 'Succeeded' } as never });
    expect(reconcileSnapshot(mislabelled, world(), now)).toEqual({ metadata: { labels: { [VM_LABEL]: 'vm1' } }, events: [], requeueAfterMs: 0 });
  });

  it("assigns to the VM's node with the effective settings, label and event", () => {
    const d = reconcileSnapshot(snapshot('s', { spec: { parallelism: { channels: 8 } } as never }), world(), now);
    expect(d.metadata).toEqual({ labels: { [NODE_LABEL]: 'node-a' } });
    expect(d.status).toMatchObject({ phase: 'Pending', nodeName: 'node-a', restoreSize: 1 << 30, effective: { channels: 8, directIO: 'Auto', deletionPolicy: 'Delete' } });
    expect(d.assigned).toEqual({ vmKey: 'a/vm1', node: 'node-a' });
    expect(d.events[0]).toMatchObject({ type: 'Normal', reason: 'Assigned' });
  });

  it("assigns by the inventory's name, never by the nodeName its agent wrote into status", () => {
    // node-b's agent may write only the inventory named node-b (admission), but it can claim
    // anything in status: a forged nodeName must not send node-a's VM's work to node-b.
    const forged = inventory('node-b', [{ namespace: 'a', name: 'vm1' }]);
    forged.status!.nodeName = 'node-a';
    const d = reconcileSnapshot(snapshot('s'), world({ inventories: [forged] }), now);
    expect(d.metadata).toEqual({ labels: { [NODE_LABEL]: 'node-b' } });
    expect(d.status).toMatchObject({ nodeName: 'node-b' });

    const onlyForged = reconcileSnapshot(snapshot('s'), world({ inventories: [inventory('node-a', []), forged] }), now);
    expect(onlyForged.metadata).toEqual({ labels: { [NODE_LABEL]: 'node-b' } });
  });

  it('takes defaults from the default class', () => {
    const cls = {
      apiVersion: 'vmsnap.io/v1alpha1',
      kind: 'VMSnapshotClass',
      metadata: { name: 'fast', annotations: { 'vmsnap.io/is-default-class': 'true' } },
      parallelism: { channels: 2 },
      directIO: 'Never',
      deletionPolicy: 'Retain',
    } as unknown as VMSnapshotClass;
    const d = reconcileSnapshot(snapshot('s'), world({ classes: [cls] }), now);
    expect(d.status).toMatchObject({ effective: { className: 'fast', channels: 2, directIO: 'Never', deletionPolicy: 'Retain' } });
  });

  const condition = (d: { status?: Record<string, unknown> }, type: string) => (d.status?.conditions as Array<{ type: string; status: string }> | undefined)?.find((c) => c.type === type);

  it('waits, with a Warning and reason VMNotFound, for a VM that only another namespace has; fails past the deadline saying why', () => {
    const w = world({ inventories: [inventory('node-a', [{ namespace: 'b', name: 'vm1' }])] });
    const d = reconcileSnapshot(snapshot('s'), w, now);
    expect(d.status).toMatchObject({ phase: 'Pending', observedGeneration: 1 });
    expect(condition(d, 'Progressing')).toMatchObject({ status: 'True', reason: 'VMNotFound', message: expect.stringMatching(/VM "vm1" not found in namespace "a".*retrying until spec.failureDeadline \(10m\)/) });
    expect(condition(d, 'Ready')).toMatchObject({ status: 'False', reason: 'VMNotFound' });
    expect(condition(d, 'Failed')).toMatchObject({ status: 'False' });
    expect(d.events).toEqual([expect.objectContaining({ type: 'Warning', reason: 'VMNotFound' })]);
    expect(d.requeueAfterMs).toBeGreaterThan(0);
    expect(d.metadata).toBeUndefined();

    // The same wait again: no patch, no second event.
    const waiting = snapshot('s', { status: d.status as never });
    expect(reconcileSnapshot(waiting, w, now)).toEqual({ events: [], requeueAfterMs: expect.any(Number) });

    // The VM appears: assigned.
    expect(reconcileSnapshot(waiting, world(), now).status).toMatchObject({ phase: 'Pending', nodeName: 'node-a' });

    // Past spec.failureDeadline: Failed for good, saying what it waited for.
    const late = new Date(Date.parse(earlier) + 10 * 60_000 + 1);
    const f = reconcileSnapshot(waiting, w, late);
    expect(f.status).toMatchObject({ phase: 'Failed', error: { message: expect.stringMatching(/within spec.failureDeadline \(10m\); it was waiting: VM "vm1" not found/) } });
    expect(condition(f, 'Failed')).toMatchObject({ status: 'True', reason: 'DeadlineExceeded' });
    expect(condition(f, 'Progressing')).toMatchObject({ status: 'False' });
  });

  it('waits instead when an inventory predates the snapshot', () => {
    const w = world({ inventories: [inventory('node-a', [], '2026-11-21T11:00:00Z')] });
    expect(reconcileSnapshot(snapshot('s'), w, now).status).toMatchObject({ phase: 'Pending', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'WaitingForInventory' })]) });
  });

  it('ignores the inventory of an agent gone for minutes (no ghost node, no endless wait)', () => {
    const ghost = inventory('old-node', [{ namespace: 'a', name: 'vm1' }], '2026-11-21T10:00:00Z');
    const d = reconcileSnapshot(snapshot('s'), world({ inventories: [inventory('node-a', [{ namespace: 'a', name: 'vm1' }]), ghost] }), now);
    expect(d.status).toMatchObject({ nodeName: 'node-a' });
    const missing = reconcileSnapshot(snapshot('s', { spec: { vmName: 'nope' } as never }), world({ inventories: [inventory('node-a', []), ghost] }), now);
    expect(condition(missing, 'Progressing')).toMatchObject({ reason: 'VMNotFound', message: expect.stringContaining('agents on: node-a)') });
  });

  it('waits while another operation holds the VM', () => {
    const running = snapshot('first', { status: { phase: 'InProgress', nodeName: 'node-a' } as never });
    const d = reconcileSnapshot(snapshot('second'), world({ snapshots: [running] }), now);
    expect(d.status).toMatchObject({ phase: 'Pending', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'WaitingForVM', message: expect.stringContaining('VMSnapshot first') })]) });
    expect(d.metadata).toBeUndefined();
  });

  it('also waits for an assignment the informer has not shown yet', () => {
    const d = reconcileSnapshot(snapshot('second'), world({ recentlyAssigned: new Map([['a/vm1', 'VMSnapshot/a/first']]) }), now);
    expect(d.status).toMatchObject({ conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'WaitingForVM' })]) });
  });

  it('fails an operation past its deadline', () => {
    const s = snapshot('s', { spec: { failureDeadline: '5s' } as never, status: { phase: 'InProgress', nodeName: 'node-a', startTime: earlier } as never });
    expect(reconcileSnapshot(s, world(), now).status).toMatchObject({ phase: 'Failed', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Failed', status: 'True', reason: 'DeadlineExceeded' })]) });
  });

  it("records the VM's pod, sanitised, when it assigns the save of a VM pod", () => {
    const d = reconcileSnapshot(snapshot('s'), world({ pods: [pod('vm1'), pod('vm1-elsewhere', { vm: 'vm1', phase: 'Pending' })] }), now);
    expect(d.status).toMatchObject({ vmPod: { name: 'vm1', uid: 'pod-vm1', labels: { 'vmsnap.io/vm': 'vm1' } } });
    expect((d.status!.vmPod as { spec: object }).spec).not.toHaveProperty('nodeName');
    // Not a pod (a socket VM), or two pods claiming the VM: nothing recorded.
    expect(reconcileSnapshot(snapshot('s'), world(), now).status).not.toHaveProperty('vmPod');
    expect(reconcileSnapshot(snapshot('s'), world({ pods: [pod('vm1'), pod('x', { vm: 'vm1' })] }), now).status).not.toHaveProperty('vmPod');
  });

  it('waits for a missing class naming spec.className, and uses it once it exists', () => {
    const d = reconcileSnapshot(snapshot('s', { spec: { className: 'nope' } as never }), world(), now);
    expect(d.status).toMatchObject({ phase: 'Pending' });
    expect(condition(d, 'Progressing')).toMatchObject({ status: 'True', reason: 'ClassNotFound', message: expect.stringContaining('spec.className') });
    expect(d.events).toEqual([expect.objectContaining({ type: 'Warning', reason: 'ClassNotFound' })]);
    const cls = { apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMSnapshotClass', metadata: { name: 'nope' }, parallelism: { channels: 3 } } as unknown as VMSnapshotClass;
    expect(reconcileSnapshot(snapshot('s', { spec: { className: 'nope' } as never }), world({ classes: [cls] }), now).status).toMatchObject({ nodeName: 'node-a', effective: { className: 'nope', channels: 3 } });
  });

  it('every written status carries all three conditions for the phase', () => {
    const assigned = reconcileSnapshot(snapshot('s'), world(), now);
    expect(['Ready', 'Progressing', 'Failed'].map((t) => condition(assigned, t)?.status)).toEqual(['False', 'True', 'False']);
  });

  it('clears status.hibernated once an inventory newer than the save reports the VM running again', () => {
    const hibernated = snapshot('s', { status: { phase: 'Succeeded', hibernated: true, completionTime: '2026-11-21T11:59:58Z' } as never });
    // The VM is stopped, or the only report predates the save: still the only copy.
    expect(reconcileSnapshot(hibernated, world({ inventories: [inventory('node-a', [{ namespace: 'a', name: 'vm1', state: 'stopped' }])] }), now).status).toBeUndefined();
    expect(reconcileSnapshot(hibernated, world({ inventories: [inventory('node-a', [{ namespace: 'a', name: 'vm1' }], '2026-11-21T11:59:57Z')] }), now).status).toBeUndefined();
    const woke = reconcileSnapshot(hibernated, world(), now);
    expect(woke.status).toEqual({ hibernated: false });
    expect(woke.events).toEqual([expect.objectContaining({ reason: 'VMRunningAgain' })]);
    // A restore into the VM that succeeded after the save says so at once.
    const wake = { metadata: { name: 'wake', namespace: 'a' }, spec: {}, status: { phase: 'Succeeded', completionTime: '2026-11-21T11:59:59Z', effective: { targetVMName: 'vm1' } } } as unknown as VMRestore;
    const stopped = world({ restores: [wake], inventories: [inventory('node-a', [{ namespace: 'a', name: 'vm1', state: 'stopped' }], '2026-11-21T11:59:50Z')] });
    expect(reconcileSnapshot(hibernated, stopped, now)).toMatchObject({ status: { hibernated: false }, events: [{ message: expect.stringContaining('VMRestore "wake"') }] });
    // Not a hibernation: nothing to watch.
    expect(reconcileSnapshot(snapshot('s', { status: { phase: 'Succeeded' } as never }), world(), now)).toEqual({ events: [] });
  });

  describe('deletion', () => {
    const deleting = (status: object, spec: object = {}) =>
      snapshot('s', { metadata: { deletionTimestamp: earlier, finalizers: [SNAPSHOT_FINALIZER] } as never, status: status as never, spec: spec as never });

    it('keeps the finalizer until the agent removed the file (Delete)', () => {
      expect(reconcileSnapshot(deleting({ phase: 'Succeeded', effective: { deletionPolicy: 'Delete' } }), world(), now).metadata).toBeUndefined();
      expect(reconcileSnapshot(deleting({ phase: 'Succeeded', fileDeleted: true }), world(), now).metadata).toEqual({ finalizers: [] });
    });
    it('releases at once for Retain, and for snapshots without a file', () => {
      expect(reconcileSnapshot(deleting({ phase: 'Succeeded' }, { deletionPolicy: 'Retain' }), world(), now).metadata).toEqual({ finalizers: [] });
      expect(reconcileSnapshot(deleting({ phase: 'Failed' }), world(), now).metadata).toEqual({ finalizers: [] });
      expect(reconcileSnapshot(deleting({}), world(), now).metadata).toEqual({ finalizers: [] });
    });
    it('waits for a running save to be cancelled', () => {
      expect(reconcileSnapshot(deleting({ phase: 'InProgress' }), world(), now).metadata).toBeUndefined();
    });
  });
});

describe('reconcileRestore', () => {
  const done = snapshot('snap', { status: { phase: 'Succeeded', readyToUse: true, nodeName: 'node-a', effective: { channels: 6 } } as never });
  const restore = (spec: Partial<VMRestore['spec']> = {}): VMRestore =>
    ({
      apiVersion: 'vmsnap.io/v1alpha1',
      kind: 'VMRestore',
      metadata: { name: 'r', namespace: 'a', uid: 'uid-r', generation: 1, creationTimestamp: earlier },
      spec: { snapshotName: 'snap', ifRunning: 'Fail', afterRestore: 'Running', restoreMode: 'Eager', ...spec },
    }) as VMRestore;

  it('refuses to replace a running VM unless ifRunning is Replace', () => {
    const d = reconcileRestore(restore(), world({ snapshots: [done] }), now);
    expect(d.status).toMatchObject({ phase: 'Failed', error: { message: expect.stringContaining('spec.ifRunning: Replace') } });
    const r = reconcileRestore(restore({ ifRunning: 'Replace' }), world({ snapshots: [done] }), now);
    expect(r.status).toMatchObject({ phase: 'Pending', nodeName: 'node-a', effective: { targetVMName: 'vm1', channels: 6, copy: false } });
  });

  it('waits for an inventory newer than the last operation on the target (a hibernated VM)', () => {
    const hibernated = snapshot('snap', {
      status: { phase: 'Succeeded', readyToUse: true, nodeName: 'node-a', completionTime: '2026-11-21T12:00:00Z', effective: { channels: 6 } } as never,
    });
    const d = reconcileRestore(restore(), world({ snapshots: [hibernated] }), now);
    expect(d.status).toMatchObject({ phase: 'Pending', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'WaitingForInventory' })]) });
    const fresh = world({ snapshots: [hibernated], inventories: [inventory('node-a', [{ namespace: 'a', name: 'vm1', state: 'unreachable' }], '2026-11-21T12:00:01Z')] });
    expect(reconcileRestore(restore(), fresh, new Date('2026-11-21T12:00:02Z')).status).toMatchObject({ phase: 'Pending', nodeName: 'node-a' });
    // A hibernated VM pod: its launcher is up, no QEMU runs; not running for ifRunning.
    const pod = world({ snapshots: [hibernated], inventories: [inventory('node-a', [{ namespace: 'a', name: 'vm1', state: 'stopped' }], '2026-11-21T12:00:01Z')] });
    expect(reconcileRestore(restore(), pod, new Date('2026-11-21T12:00:02Z')).status).toMatchObject({ phase: 'Pending', nodeName: 'node-a' });
  });

  it('restores a copy under a new name on the snapshot node', () => {
    const d = reconcileRestore(restore({ targetVMName: 'vm2' }), world({ snapshots: [done] }), now);
    expect(d.status).toMatchObject({ nodeName: 'node-a', effective: { targetVMName: 'vm2', copy: true } });
    expect(d.metadata).toEqual({ labels: { [NODE_LABEL]: 'node-a' } });
  });

  it('waits for the snapshot, and fails with a failed one', () => {
    expect(reconcileRestore(restore(), world(), now).status).toMatchObject({ phase: 'Pending', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'SnapshotNotFound' })]) });
    const failed = snapshot('snap', { status: { phase: 'Failed', error: { message: 'disk full' } } as never });
    expect(reconcileRestore(restore(), world({ snapshots: [failed] }), now).status).toMatchObject({ phase: 'Failed', error: { message: expect.stringContaining('disk full') } });
  });

  it("fails a restore past its own spec.failureDeadline, saying what it waited for (the snapshot's effective settings recorded)", () => {
    const waiting = reconcileRestore(restore({ failureDeadline: '30s' }), world(), now);
    const r = { ...restore({ failureDeadline: '30s' }), status: waiting.status } as VMRestore;
    expect(reconcileRestore(r, world(), new Date(Date.parse(earlier) + 29_000)).status).toBeUndefined(); // still waiting, nothing new
    const f = reconcileRestore(r, world(), new Date(Date.parse(earlier) + 30_001));
    expect(f.status).toMatchObject({ phase: 'Failed', error: { message: expect.stringMatching(/^the restore did not finish within spec.failureDeadline \(30s\); it was waiting: waiting for VMSnapshot "snap"/) } });
    expect(f.events).toEqual([expect.objectContaining({ type: 'Warning', reason: 'DeadlineExceeded' })]);
    // The default is VMSnapshot's, and the effective settings record it.
    const assigned = reconcileRestore(restore({ ifRunning: 'Replace' }), world({ snapshots: [done] }), now);
    expect(assigned.status).toMatchObject({ effective: { failureDeadline: '10m' } });
  });

  describe('VM pods: copies and wakes in a new pod', () => {
    const record = { name: 'vm1', uid: 'pod-vm1', labels: { 'vmsnap.io/vm': 'vm1' }, spec: pod('vm1').spec! };
    const podSnap = snapshot('snap', { status: { phase: 'Succeeded', readyToUse: true, nodeName: 'node-a', effective: { channels: 6 }, vmPod: record } as never });

    it("creates the copy's pod first, then hands the restore to the node once the node reports it", () => {
      const d = reconcileRestore(restore({ targetVMName: 'vm2' }), world({ snapshots: [podSnap], pods: [pod('vm1')] }), now);
      expect(d.pod).toMatchObject({ create: { metadata: { name: 'vm2', namespace: 'a', ownerReferences: [{ uid: 'uid-r' }] }, spec: { nodeName: 'node-a' } } });
      expect(d.status).toMatchObject({ phase: 'Pending', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'CreatingPod' })]) });
      expect(d.metadata).toBeUndefined();

      const made = pod('vm2', { owner: 'uid-r' });
      const seen = world({ snapshots: [podSnap], pods: [pod('vm1'), made], inventories: [inventory('node-a', [{ namespace: 'a', name: 'vm1' }, { namespace: 'a', name: 'vm2', state: 'inmigrate' }])] });
      const a = reconcileRestore(restore({ targetVMName: 'vm2' }), seen, now);
      expect(a.status).toMatchObject({ phase: 'Pending', nodeName: 'node-a', pod: { name: 'vm2', uid: 'pod-vm2' }, effective: { copy: true, targetVMName: 'vm2' } });
      expect(a.metadata).toEqual({ labels: { [NODE_LABEL]: 'node-a' } });
    });

    it('hands an in-place Replace restore of a VM pod to its node without waiting for a newer inventory', () => {
      // The snapshot finished a moment ago; the inventory predates it.
      const justSaved = snapshot('snap', {
        status: { phase: 'Succeeded', readyToUse: true, nodeName: 'node-a', completionTime: '2026-11-21T12:00:00Z', effective: { channels: 6 }, vmPod: record } as never,
      });
      const w = world({ snapshots: [justSaved], pods: [pod('vm1')] });
      const d = reconcileRestore(restore({ ifRunning: 'Replace', restoreMode: 'Lazy' }), w, now);
      expect(d.status).toMatchObject({ phase: 'Pending', nodeName: 'node-a', effective: { targetVMName: 'vm1', copy: false } });
      expect(d.metadata).toEqual({ labels: { [NODE_LABEL]: 'node-a' } });
      expect(d.pod).toBeUndefined();
      // ifRunning Fail reads whether it runs from the inventory: that must be newer than the save.
      expect(reconcileRestore(restore(), w, now).status).toMatchObject({ phase: 'Pending', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'WaitingForInventory' })]) });
      // A pod of the VM on another node: the restore goes there, which this snapshot (no repository) cannot.
      const elsewhere = { ...pod('vm1'), spec: { ...pod('vm1').spec, nodeName: 'node-b' } };
      expect(reconcileRestore(restore({ ifRunning: 'Replace' }), world({ snapshots: [justSaved], pods: [elsewhere] }), now).status).toMatchObject({
        phase: 'Failed',
        error: { message: expect.stringMatching(/no repository: it cannot be restored on node node-b, where VM "vm1" runs \(spec.nodeName is not set/) },
      });
      // Not bound to a node yet: where it will run is not known.
      const unbound = { ...pod('vm1'), spec: { ...pod('vm1').spec, nodeName: undefined } };
      expect(reconcileRestore(restore({ ifRunning: 'Replace' }), world({ snapshots: [justSaved], pods: [unbound] }), now).status).toMatchObject({
        conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'WaitingForPod' })]),
      });
      // Another operation on the VM still holds it.
      const running = { ...restore({ ifRunning: 'Replace' }), metadata: { ...restore().metadata, name: 'other', uid: 'uid-o' }, status: { phase: 'InProgress', nodeName: 'node-a', effective: { targetVMName: 'vm1' } } } as VMRestore;
      expect(reconcileRestore(restore({ ifRunning: 'Replace' }), world({ snapshots: [justSaved], pods: [pod('vm1')], restores: [running] }), now).status).toMatchObject({
        conditions: expect.arrayContaining([expect.objectContaining({ type: 'Progressing', reason: 'WaitingForVM' })]),
      });
    });

    it('fails a copy onto a taken name, naming spec.targetVMName', () => {
      const d = reconcileRestore(restore({ targetVMName: 'vm2' }), world({ snapshots: [podSnap], pods: [pod('vm1'), pod('vm2')] }), now);
      expect(d.status).toMatchObject({ phase: 'Failed', error: { message: expect.stringMatching(/^spec.targetVMName "vm2" is taken/) } });
      expect(d.pod).toBeUndefined();
    });

    it('wakes a hibernated VM whose pod is gone into a new pod of the same name', () => {
      const d = reconcileRestore(restore(), world({ snapshots: [podSnap], pods: [], inventories: [inventory('node-a', [])] }), now);
      expect(d.pod).toMatchObject({ create: { metadata: { name: 'vm1', labels: { 'vmsnap.io/vm': 'vm1' } } } });
    });

    it('deletes the pod of a failed restore and hands the pod of a succeeded one to the user', () => {
      const made = pod('vm2', { owner: 'uid-r' });
      const failed = { ...restore({ targetVMName: 'vm2' }), status: { phase: 'Failed' } } as VMRestore;
      expect(reconcileRestore(failed, world({ pods: [made] }), now).pod).toEqual({ delete: { namespace: 'a', name: 'vm2', uid: 'pod-vm2' } });
      const ok = { ...restore({ targetVMName: 'vm2' }), status: { phase: 'Succeeded' } } as VMRestore;
      expect(reconcileRestore(ok, world({ pods: [made] }), now).pod).toEqual({ release: { namespace: 'a', name: 'vm2', resourceVersion: '7', ownerReferences: [] } });
      // Not its pod: nothing.
      expect(reconcileRestore(ok, world({ pods: [pod('vm2', { owner: 'uid-other' })] }), now).pod).toBeUndefined();
    });
  });
});
