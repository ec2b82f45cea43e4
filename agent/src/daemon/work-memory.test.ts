import { NODE_LABEL, type VMSnapshot } from '../../../api/index.js';
import { decide, type Work } from './decide.js';
import { WorkMemory } from './work-memory.js';

const completion = { status: {}, event: { type: 'Normal' as const, reason: 'SaveSucceeded', message: 'done' } };
const work = (uid: string, phase: string): Work => ({
  kind: 'snapshot',
  obj: { metadata: { uid, namespace: 'a', name: uid, labels: { [NODE_LABEL]: 'n' } }, spec: { vmName: 'vm' }, status: { phase, nodeName: 'n' } } as unknown as VMSnapshot,
});

/** Everything the dispatcher can remember about one uid. */
function fill(m: WorkMemory, uid: string): void {
  m.markHandled(uid);
  m.deletion(uid, 'done');
  m.keepUnwritten(uid, { kind: 'snapshot', ref: { namespace: 'a', name: uid }, completion });
  m.firstInvalid(uid, '1');
  m.queue.set(uid, work(uid, 'Pending'));
}

describe('WorkMemory', () => {
  it('forgets everything about an object once it is deleted', () => {
    const m = new WorkMemory();
    fill(m, 'u1');
    fill(m, 'u2');
    expect(m.size()).toBe(2);
    m.forget('u1');
    expect(m.size()).toBe(1);
    expect(m.held('u1')).toEqual({ handled: false, deletion: undefined, unwritten: false, job: undefined });
    expect(m.queue.has('u1')).toBe(false);
    expect(m.held('u2')).toMatchObject({ handled: true, deletion: 'done', unwritten: true });
  });

  it('stays bounded by the live objects however many come and go', () => {
    const m = new WorkMemory();
    for (let i = 0; i < 1000; i++) {
      fill(m, `u${i}`);
      m.forget(`u${i}`);
    }
    expect(m.size()).toBe(0);
  });

  it('drops what no cache holds and no job runs for (a deletion missed while a watch was down)', () => {
    const m = new WorkMemory();
    for (const uid of ['gone', 'kept', 'running']) fill(m, uid);
    m.retainOnly(new Set(['kept', 'running']));
    expect(m.size()).toBe(2);
    expect(m.held('gone').handled).toBe(false);
  });

  it('forgets a Succeeded object as decide says, and keeps a Failed one handled', () => {
    const m = new WorkMemory();
    m.markHandled('ok');
    m.markHandled('bad');
    m.firstInvalid('ok', '3');
    const node = { name: 'n', stopping: false, leftoverFile: () => false };
    for (const [uid, phase] of [['ok', 'Succeeded'], ['bad', 'Failed']] as const) {
      const action = decide({ uid, deleting: false, phase, work: work(uid, phase) }, m.held(uid), node);
      if (action.do === 'nothing' && action.forget) m.forgetSettled(uid);
    }
    expect(m.held('ok').handled).toBe(false);
    expect(m.held('bad').handled).toBe(true);
    expect(m.size()).toBe(1);
  });

  it('reports an unparsable object once per version and hands an unwritten status out once', () => {
    const m = new WorkMemory();
    expect(m.firstInvalid('u', '1')).toBe(true);
    expect(m.firstInvalid('u', '1')).toBe(false);
    expect(m.firstInvalid('u', '2')).toBe(true);
    expect(m.size()).toBe(1); // one entry per uid, not one per version
    m.keepUnwritten('w', { kind: 'snapshot', ref: { namespace: 'a', name: 'w' }, completion });
    expect(m.takeUnwritten('w')?.completion).toBe(completion);
    expect(m.takeUnwritten('w')).toBeUndefined();
  });
});
