import { podVmIdentity, selectPodVms, type PodLike } from './identity.js';

const UID = '0f2c7b1e-5a3d-4e8f-9b6a-1c2d3e4f5a6b';
const pod = (over: { name?: string; ns?: string; uid?: string; label?: string | null; node?: string; phase?: string; deleting?: boolean } = {}): PodLike => ({
  metadata: {
    name: over.name ?? 'vm-web-0',
    namespace: over.ns ?? 'team-a',
    uid: over.uid ?? UID,
    labels: over.label === null ? {} : { 'vmsnap.io/vm': over.label ?? 'web', app: 'x' },
    ...(over.deleting ? { deletionTimestamp: '2026-12-07T00:00:00Z' } : {}),
  },
  spec: { nodeName: over.node ?? 'node-a' },
  status: { phase: over.phase ?? 'Running' },
});

describe('podVmIdentity', () => {
  it('takes namespace, VM name (the label value), pod name and uid from the Pod object', () => {
    expect(podVmIdentity(pod(), 'node-a')).toEqual({ ok: true, vm: { namespace: 'team-a', name: 'web', podName: 'vm-web-0', podUid: UID, writableVolumes: [] } });
  });

  it.each([
    ['no label', pod({ label: null }), /has no vmsnap.io\/vm label/],
    ['a label that is not a DNS-1123 label', pod({ label: '../other-ns/web' }), /not a DNS-1123 label/],
    ['an upper-case label', pod({ label: 'Web' }), /not a DNS-1123 label/],
    ['another node', pod({ node: 'node-b' }), /not on node node-a/],
    ['a pod being deleted', pod({ deleting: true }), /being deleted/],
    ['a Pending pod', pod({ phase: 'Pending' }), /not Running \(phase Pending\)/],
    ['a uid that is not a UUID', pod({ uid: '../../etc' }), /no valid uid/],
  ])('refuses %s', (_what, p, reason) => {
    const v = podVmIdentity(p, 'node-a');
    expect(v.ok).toBe(false);
    if (!v.ok) expect(v.reason).toMatch(reason);
  });
});

describe('selectPodVms', () => {
  it('keeps usable VM pods sorted and refuses two pods claiming one VM name', () => {
    const uid2 = UID.replace('0f2c', '1f2c');
    const uid3 = UID.replace('0f2c', '2f2c');
    const r = selectPodVms(
      [pod({ name: 'b', label: 'zeta', uid: uid3 }), pod({ name: 'x', label: 'web' }), pod({ name: 'y', label: 'web', uid: uid2 }), pod({ phase: 'Succeeded', name: 'done' })],
      'node-a',
    );
    expect(r.vms.map((v) => `${v.namespace}/${v.name}/${v.podName}`)).toEqual(['team-a/zeta/b']);
    expect(r.skipped.map((s) => s.reason).join('\n')).toMatch(/claimed by 2 Running pods \(x, y\)/);
    expect(r.skipped.map((s) => s.pod)).toContain('team-a/done');
  });
});
