import { NODE_LABEL, type VMRestore, type VMSnapshot } from '../../../api/index.js';
import { decide, decideRuns, lockKey, type Held, type NodeView, type Seen, type Work } from './decide.js';

const NODE = 'node-a';
const node = (over: Partial<NodeView> = {}): NodeView => ({ name: NODE, stopping: false, leftoverFile: () => false, ...over });
const free: Held = { handled: false, unwritten: false };

function snapshot(uid: string, phase?: string, over: { node?: string; vm?: string; ns?: string; since?: string; effective?: boolean } = {}): VMSnapshot {
  const at = over.node ?? NODE;
  return {
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMSnapshot',
    metadata: { name: `s-${uid}`, namespace: over.ns ?? 'a', uid, creationTimestamp: over.since ?? '2026-11-21T12:00:00Z', labels: { [NODE_LABEL]: at } },
    spec: { vmName: over.vm ?? 'vm1' },
    ...(phase ? { status: { phase, nodeName: at, ...(over.effective === false ? {} : { effective: { channels: 4 } }) } } : {}),
  } as unknown as VMSnapshot;
}

function restore(uid: string, phase: string, target = 'vm1'): VMRestore {
  return {
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMRestore',
    metadata: { name: `r-${uid}`, namespace: 'a', uid, creationTimestamp: '2026-11-21T12:00:00Z', labels: { [NODE_LABEL]: NODE } },
    spec: { snapshotName: 's' },
    status: { phase, nodeName: NODE, effective: { snapshotName: 's', targetVMName: target } },
  } as unknown as VMRestore;
}

const seenSnap = (obj: VMSnapshot, deleting = false): Seen => ({ uid: obj.metadata.uid!, deleting, phase: obj.status?.phase, work: { kind: 'snapshot', obj } });
const seenRestore = (obj: VMRestore, deleting = false): Seen => ({ uid: obj.metadata.uid!, deleting, phase: obj.status?.phase, work: { kind: 'restore', obj } });

describe('decide', () => {
  describe('with a job running for the object', () => {
    const running: Held = { ...free, handled: true, job: { mode: 'run', cancelled: false } };
    it('cancels it when the object is deleted', () => {
      expect(decide(seenSnap(snapshot('u', 'InProgress'), true), running, node())).toMatchObject({ do: 'cancel', cause: 'deleted' });
    });
    it('cancels it when the operator failed the object (its deadline passed)', () => {
      expect(decide(seenRestore(restore('u', 'Failed')), running, node())).toMatchObject({ do: 'cancel', cause: 'failed' });
    });
    it('cancels only once', () => {
      expect(decide(seenSnap(snapshot('u', 'Failed'), true), { ...running, job: { mode: 'run', cancelled: true } }, node())).toMatchObject({ do: 'nothing' });
    });
    it('lets it run otherwise, even when the object no longer parses', () => {
      expect(decide(seenSnap(snapshot('u', 'InProgress')), running, node())).toMatchObject({ do: 'nothing', why: 'its run job runs' });
      expect(decide({ uid: 'u', deleting: false, phase: 'InProgress' }, running, node())).toMatchObject({ do: 'nothing' });
    });
    it('still cancels while the agent stops', () => {
      expect(decide(seenSnap(snapshot('u', 'InProgress'), true), running, node({ stopping: true }))).toMatchObject({ do: 'cancel' });
    });
  });

  it('starts nothing new while the agent stops', () => {
    expect(decide(seenSnap(snapshot('u', 'Pending')), free, node({ stopping: true }))).toMatchObject({ do: 'nothing', why: 'the agent is stopping' });
  });

  it('writes a final status that could not be written, before anything else', () => {
    expect(decide(seenSnap(snapshot('u', 'InProgress')), { ...free, unwritten: true, handled: true }, node())).toMatchObject({ do: 'write' });
  });

  it('ignores an object that does not parse', () => {
    expect(decide({ uid: 'u', deleting: false, phase: 'Pending' }, free, node())).toMatchObject({ do: 'nothing', why: 'it does not parse' });
  });

  it('queues assigned Pending work for a slot (claimed when decideRuns picks it), once', () => {
    expect(decide(seenSnap(snapshot('u', 'Pending')), free, node())).toMatchObject({ do: 'queue' });
    expect(decide(seenRestore(restore('u', 'Pending')), free, node())).toMatchObject({ do: 'queue' });
    expect(decide(seenSnap(snapshot('u', 'Pending')), { ...free, handled: true }, node())).toMatchObject({ do: 'nothing', why: 'already handled by this agent' });
  });

  it('leaves alone work assigned elsewhere, not assigned yet, or being deleted', () => {
    expect(decide(seenSnap(snapshot('u', 'Pending', { node: 'node-b' })), free, node())).toMatchObject({ do: 'nothing' });
    expect(decide(seenSnap(snapshot('u', 'Pending', { effective: false })), free, node())).toMatchObject({ do: 'nothing' });
    expect(decide(seenSnap(snapshot('u')), free, node())).toMatchObject({ do: 'nothing' });
    expect(decide(seenRestore(restore('u', 'Pending'), true), free, node())).toMatchObject({ do: 'nothing' });
  });

  it('recovers what a previous agent left InProgress, once', () => {
    expect(decide(seenSnap(snapshot('u', 'InProgress')), free, node())).toMatchObject({ do: 'recover' });
    expect(decide(seenRestore(restore('u', 'InProgress')), free, node())).toMatchObject({ do: 'recover' });
    expect(decide(seenRestore(restore('u', 'InProgress')), { ...free, handled: true }, node())).toMatchObject({ do: 'nothing' });
    // Another node's InProgress object is not ours to recover.
    expect(decide(seenSnap(snapshot('u', 'InProgress', { node: 'node-b' })), free, node())).toMatchObject({ do: 'nothing' });
  });

  it('cleans up after a failure nobody watched: a restore always, a snapshot when its file is still there', () => {
    expect(decide(seenRestore(restore('u', 'Failed')), free, node())).toMatchObject({ do: 'cleanup' });
    const asked: string[] = [];
    const leftover = node({ leftoverFile: (s) => (asked.push(s.metadata.uid!), true) });
    expect(decide(seenSnap(snapshot('u', 'Failed')), free, leftover)).toMatchObject({ do: 'cleanup' });
    expect(asked).toEqual(['u']);
    expect(decide(seenSnap(snapshot('u', 'Failed')), free, node())).toEqual({ do: 'nothing', why: 'Failed and nothing left behind', settle: true });
    expect(decide(seenSnap(snapshot('u', 'Failed')), { ...free, handled: true }, leftover)).toMatchObject({ do: 'nothing' });
  });

  it('deletes the file of a deleted snapshot once, and never for a restore', () => {
    expect(decide(seenSnap(snapshot('u', 'Succeeded'), true), free, node())).toMatchObject({ do: 'delete-file' });
    expect(decide(seenSnap(snapshot('u', 'Succeeded'), true), { ...free, deletion: 'busy' }, node())).toMatchObject({ do: 'nothing' });
    expect(decide(seenSnap(snapshot('u', 'Succeeded'), true), { ...free, deletion: 'done' }, node())).toMatchObject({ do: 'nothing' });
    // A handled Failed snapshot is deleted like any other (the first look settled its clean-up).
    expect(decide(seenSnap(snapshot('u', 'Failed'), true), { ...free, handled: true }, node())).toMatchObject({ do: 'delete-file' });
    expect(decide(seenRestore(restore('u', 'Succeeded'), true), free, node())).toMatchObject({ do: 'nothing' });
  });

  it('forgets a Succeeded object with nothing running; a Failed one stays handled (its clean-up runs once)', () => {
    expect(decide(seenSnap(snapshot('u', 'Succeeded')), { ...free, handled: true }, node())).toMatchObject({ do: 'nothing', forget: true });
    expect(decide(seenRestore(restore('u', 'Succeeded')), { ...free, handled: true }, node())).toMatchObject({ do: 'nothing', forget: true });
    const failed = decide(seenSnap(snapshot('u', 'Failed')), { ...free, handled: true }, node());
    expect(failed).toMatchObject({ do: 'nothing' });
    expect(failed).not.toHaveProperty('forget');
  });
});

describe('decideRuns', () => {
  const queue = (...ws: Work[]) => new Map(ws.map((w) => [w.obj.metadata.uid!, w]));
  const snap = (uid: string, over: Parameters<typeof snapshot>[2] = {}): Work => ({ kind: 'snapshot', obj: snapshot(uid, 'Pending', over) });
  const state = { reserved: new Map<string, string>(), running: [] as string[], total: 4, perNamespace: 3, lastServed: new Map<string, number>() };

  it('runs one piece of work per VM, the oldest first', () => {
    const q = queue(snap('late', { since: '2026-11-21T12:00:09Z' }), snap('early', { since: '2026-11-21T12:00:01Z' }), snap('other', { vm: 'vm2' }));
    expect(decideRuns(q, state).map((w) => w.id).sort()).toEqual(['early', 'other']);
  });

  it('breaks a tie between work of the same age on one VM by uid', () => {
    expect(decideRuns(queue(snap('b'), snap('a')), state).map((w) => w.id)).toEqual(['a']);
  });

  it("a restore not resolved yet holds the VM its spec names", () => {
    const r = restore('r1', 'Pending', 'vm1');
    const unresolved: Work = { kind: 'restore', obj: { ...r, spec: { ...r.spec, targetVMName: 'copy' }, status: { ...r.status, effective: undefined } } as VMRestore };
    expect(lockKey(unresolved)).toBe(lockKey({ kind: 'restore', obj: restore('r2', 'Pending', 'copy') }));
  });

  it('waits for a VM another job holds, but not for one the same work holds', () => {
    const q = queue(snap('s1'));
    expect(decideRuns(q, { ...state, reserved: new Map([[lockKey(snap('s1')), 'someone']]) })).toEqual([]);
    expect(decideRuns(q, { ...state, reserved: new Map([[lockKey(snap('s1')), 's1']]) }).map((w) => w.id)).toEqual(['s1']);
  });

  it('a restore holds its target VM: a copy to another name does not wait for the source', () => {
    const r: Work = { kind: 'restore', obj: restore('r1', 'Pending', 'copy') };
    expect(lockKey(r)).not.toBe(lockKey(snap('s1')));
    expect(decideRuns(queue(r, snap('s1')), state)).toHaveLength(2);
  });

  it('shares the free slots between namespaces (fair-share)', () => {
    const q = queue(snap('a1', { ns: 'a', vm: 'x' }), snap('a2', { ns: 'a', vm: 'y' }), snap('b1', { ns: 'b' }));
    expect(decideRuns(q, { ...state, total: 2, perNamespace: 1 }).map((w) => w.id).sort()).toEqual(['a1', 'b1']);
    expect(decideRuns(q, { ...state, total: 2, perNamespace: 1, running: ['a', 'b'] })).toEqual([]);
  });
});
