import type { RecordedVMPod } from '../api/index.js';
import { decideRestorePod, RESTORE_POD_READY_MS, type RestorePodFacts } from './restore-pod.js';
import { recordVmPod, restorePodManifest, type PodView } from './vm-pod-record.js';

const T0 = Date.parse('2026-11-21T12:00:00Z');

function vmPod(over: { name?: string; ns?: string; vm?: string; uid?: string; owner?: string; phase?: string; created?: number; deleting?: boolean } = {}): PodView {
  return {
    metadata: {
      name: over.name ?? 'web',
      namespace: over.ns ?? 'team-a',
      uid: over.uid ?? 'u-web',
      labels: over.vm === '' ? {} : { 'vmsnap.io/vm': over.vm ?? over.name ?? 'web' },
      creationTimestamp: new Date(over.created ?? T0 - 60_000).toISOString(),
      ...(over.owner ? { ownerReferences: [{ apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMRestore', name: 'r', uid: over.owner, controller: true }] } : {}),
      ...(over.deleting ? { deletionTimestamp: new Date(T0).toISOString() } : {}),
    },
    spec: { nodeName: 'node-a', containers: [{ name: 'vm', image: 'vm:1', volumeMounts: [{ name: 'vmsnap-run', mountPath: '/run/vmsnap' }] }], volumes: [{ name: 'vmsnap-run', emptyDir: {} }] },
    status: { phase: over.phase ?? 'Running' },
  };
}

const record = (): RecordedVMPod => {
  const r = recordVmPod(vmPod());
  if (!r.ok) throw new Error(r.reason);
  return r.record;
};

const facts = (over: Partial<RestorePodFacts> = {}): RestorePodFacts => ({
  namespace: 'team-a',
  restore: { name: 'r', uid: 'u-restore' },
  snapshotName: 's',
  sourceVMName: 'web',
  targetVMName: 'web-copy',
  copy: true,
  node: 'node-a',
  record: record(),
  disks: [],
  pods: [vmPod()],
  inventory: { updatedAt: T0 - 1_000 },
  now: T0,
  ...over,
});

describe('recordVmPod', () => {
  it('keeps what makes the VM and drops what the API server, its admission or a controller set', () => {
    const pod = vmPod();
    pod.metadata.labels = { 'vmsnap.io/vm': 'web', app: 'web', 'pod-template-hash': 'abc', 'batch.kubernetes.io/job-name': 'j' };
    pod.metadata.annotations = { note: 'kept', 'kubectl.kubernetes.io/last-applied-configuration': '{}' };
    pod.spec = {
      ...pod.spec,
      priority: 1000,
      priorityClassName: 'vms',
      serviceAccount: 'default',
      serviceAccountName: 'default',
      ephemeralContainers: [{ name: 'debug' }],
      containers: [{ name: 'vm', image: 'vm:1', volumeMounts: [{ name: 'vmsnap-run', mountPath: '/run/vmsnap' }, { name: 'kube-api-access-x7k2p', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount' }] }],
      volumes: [{ name: 'vmsnap-run', emptyDir: {} }, { name: 'kube-api-access-x7k2p', projected: { sources: [] } }],
    };
    const r = recordVmPod(pod);
    if (!r.ok) throw new Error(r.reason);
    expect(r.record).toMatchObject({ name: 'web', uid: 'u-web', labels: { 'vmsnap.io/vm': 'web', app: 'web' }, annotations: { note: 'kept' } });
    expect(Object.keys(r.record.labels!)).toEqual(['vmsnap.io/vm', 'app']);
    expect(r.record.spec).toEqual({
      priorityClassName: 'vms',
      serviceAccountName: 'default',
      containers: [{ name: 'vm', image: 'vm:1', volumeMounts: [{ name: 'vmsnap-run', mountPath: '/run/vmsnap' }] }],
      volumes: [{ name: 'vmsnap-run', emptyDir: {} }],
    });
    // The pod itself is untouched.
    expect(pod.spec.nodeName).toBe('node-a');
  });

  it('refuses a spec too large to record, saying how large', () => {
    const pod = vmPod();
    pod.metadata.annotations = { big: 'x'.repeat(300_000) };
    expect(recordVmPod(pod)).toMatchObject({ ok: false, reason: expect.stringMatching(/over the 262144 a VMSnapshot records/) });
  });
});

describe('restorePodManifest', () => {
  it("makes the target's pod in the restore's namespace, pinned to the node, owned by the VMRestore, its launcher starting QEMU with -incoming defer", () => {
    const made = restorePodManifest(record(), { namespace: 'team-a', vmName: 'web-copy', node: 'node-b', restore: { name: 'r', uid: 'u-restore' }, snapshotName: 's' });
    if (!made.ok) throw new Error(made.reason);
    expect(made.pod.metadata).toMatchObject({
      name: 'web-copy',
      namespace: 'team-a',
      labels: { 'vmsnap.io/vm': 'web-copy', 'vmsnap.io/restore-pod': 'true' },
      annotations: { 'vmsnap.io/restore': 'r', 'vmsnap.io/snapshot': 's' },
      ownerReferences: [{ apiVersion: 'vmsnap.io/v1alpha1', kind: 'VMRestore', name: 'r', uid: 'u-restore', controller: true }],
    });
    expect(made.pod.spec).toMatchObject({ nodeName: 'node-b', containers: [{ name: 'vm', env: [{ name: 'VMSNAP_LAUNCHER_START', value: 'incoming' }] }] });
  });

  it('replaces a start mode the recorded pod set, and refuses a pod without the launcher', () => {
    const r = record();
    (r.spec.containers as Array<Record<string, unknown>>)[0]!.env = [{ name: 'VMSNAP_LAUNCHER_START', value: 'run' }, { name: 'A', value: '1' }];
    const made = restorePodManifest(r, { namespace: 'team-a', vmName: 'w', node: 'n', restore: { name: 'r', uid: 'u' }, snapshotName: 's' });
    expect(made.ok && (made.pod.spec!.containers as Array<{ env: unknown }>)[0]!.env).toEqual([{ name: 'A', value: '1' }, { name: 'VMSNAP_LAUNCHER_START', value: 'incoming' }]);
    r.spec.containers = [{ name: 'vm', image: 'x' }];
    expect(restorePodManifest(r, { namespace: 'team-a', vmName: 'w', node: 'n', restore: { name: 'r', uid: 'u' }, snapshotName: 's' })).toMatchObject({ ok: false, reason: expect.stringMatching(/no container that mounts the vmsnap-run volume/) });
  });
});

describe('decideRestorePod', () => {
  it('creates the pod of a copy whose name is free', () => {
    const step = decideRestorePod(facts());
    expect(step.kind).toBe('create');
    expect(step.kind === 'create' && step.pod.metadata).toMatchObject({ name: 'web-copy', namespace: 'team-a' });
  });

  it('refuses a copy whose name a pod or a VM of the namespace has, naming spec.targetVMName', () => {
    expect(decideRestorePod(facts({ pods: [vmPod(), vmPod({ name: 'web-copy', vm: '', uid: 'u-x' })] }))).toMatchObject({
      kind: 'fail',
      reason: 'InvalidSpec',
      message: expect.stringMatching(/^spec.targetVMName "web-copy" is taken: pod web-copy in namespace team-a exists/),
    });
    expect(decideRestorePod(facts({ pods: [vmPod(), vmPod({ name: 'other', vm: 'web-copy', uid: 'u-o' })] }))).toMatchObject({
      kind: 'fail',
      message: expect.stringMatching(/pod other in namespace team-a runs VM web-copy/),
    });
    // Another namespace's pod of that name takes nothing here.
    expect(decideRestorePod(facts({ pods: [vmPod({ name: 'web-copy', ns: 'team-b' })] })).kind).toBe('create');
  });

  it('refuses a copy of a VM whose writable disks the snapshot froze (the copy would share them)', () => {
    const disks = [{ device: 'virtio0', base: '/b', baseFormat: 'qcow2', virtualSize: 1 }];
    expect(decideRestorePod(facts({ disks }))).toMatchObject({ kind: 'fail', message: expect.stringMatching(/froze writable disks \(virtio0\): a copy of a VM pod with writable disks/) });
  });

  it('wakes a VM in its own pod when there is one, in a new pod when it is gone', () => {
    const wake = { targetVMName: 'web', copy: false };
    expect(decideRestorePod(facts({ ...wake }))).toEqual({ kind: 'inPlace' });
    expect(decideRestorePod(facts({ ...wake, pods: [] })).kind).toBe('create');
    expect(decideRestorePod(facts({ ...wake, pods: [vmPod({ deleting: true })] }))).toMatchObject({ kind: 'wait', message: expect.stringMatching(/to finish terminating/) });
    expect(decideRestorePod(facts({ ...wake, pods: [vmPod({ vm: '' })] }))).toMatchObject({ kind: 'fail', message: expect.stringMatching(/pod web in namespace team-a is not a VM pod/) });
  });

  it('waits for its own pod until the node reports it, then hands the restore over', () => {
    const ours = vmPod({ name: 'web-copy', uid: 'u-made', owner: 'u-restore', phase: 'Pending', created: T0 - 5_000 });
    ours.status = { phase: 'Pending', containerStatuses: [{ name: 'vm', state: { waiting: { reason: 'ContainerCreating' } } }] };
    expect(decideRestorePod(facts({ pods: [vmPod(), ours] }))).toMatchObject({ kind: 'wait', message: expect.stringMatching(/waiting for pod web-copy \(made for this restore\)/) });
    ours.status = { phase: 'Running' };
    // An inventory older than the pod says nothing about it.
    expect(decideRestorePod(facts({ pods: [ours], inventory: { state: 'inmigrate', updatedAt: T0 - 6_000 } })).kind).toBe('wait');
    expect(decideRestorePod(facts({ pods: [ours], inventory: { state: 'inmigrate', updatedAt: T0 - 1_000 } }))).toEqual({ kind: 'ready', pod: { name: 'web-copy', uid: 'u-made' } });
  });

  it('fails and deletes its own pod when it never comes up or ends', () => {
    const late = vmPod({ name: 'web-copy', uid: 'u-made', owner: 'u-restore', phase: 'Pending', created: T0 - RESTORE_POD_READY_MS - 1 });
    late.status = { phase: 'Pending', containerStatuses: [{ name: 'vm', state: { waiting: { reason: 'ErrImageNeverPull', message: 'image not present' } } }] };
    expect(decideRestorePod(facts({ pods: [late] }))).toEqual({
      kind: 'fail',
      reason: 'Failed',
      message: expect.stringMatching(/did not come up on node node-a within 180s \(container vm: ErrImageNeverPull: image not present\); it was deleted/),
      deletePod: { name: 'web-copy', uid: 'u-made' },
    });
    const ended = vmPod({ name: 'web-copy', uid: 'u-made', owner: 'u-restore', phase: 'Failed' });
    expect(decideRestorePod(facts({ pods: [ended] }))).toMatchObject({ kind: 'fail', deletePod: { name: 'web-copy', uid: 'u-made' } });
  });
});
