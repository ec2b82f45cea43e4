import { findCondition, setCondition } from './conditions.js';
import { transferDisplay } from './format.js';

describe('setCondition', () => {
  const t0 = new Date('2025-01-01T00:00:00Z');
  const t1 = new Date('2025-01-01T00:01:00Z');

  it('adds, then keeps lastTransitionTime while the status is unchanged', () => {
    const a = setCondition(undefined, { type: 'Ready', status: 'False', reason: 'Saving', message: '10%' }, t0);
    expect(a).toEqual([{ type: 'Ready', status: 'False', reason: 'Saving', message: '10%', lastTransitionTime: t0.toISOString() }]);
    const b = setCondition(a, { type: 'Ready', status: 'False', reason: 'Saving', message: '50%', observedGeneration: 2 }, t1);
    expect(b[0]).toMatchObject({ message: '50%', lastTransitionTime: t0.toISOString(), observedGeneration: 2 });
    const c = setCondition(b, { type: 'Ready', status: 'True', reason: 'Saved' }, t1);
    expect(findCondition(c, 'Ready')).toMatchObject({ status: 'True', lastTransitionTime: t1.toISOString(), message: '' });
    expect(a[0]!.message).toBe('10%'); // inputs untouched
  });

  it('keeps other condition types', () => {
    const list = setCondition(setCondition([], { type: 'Ready', status: 'True', reason: 'Saved' }, t0), { type: 'Other', status: 'Unknown', reason: 'X' }, t1);
    expect(list.map((c) => c.type)).toEqual(['Ready', 'Other']);
  });
});

describe('transferDisplay', () => {
  it('renders duration and throughput', () => {
    expect(transferDisplay(4 * 1024 ** 3, 2000)).toEqual({ durationHuman: '2s', throughputMiBps: 2048, throughputHuman: '2GiB/s' });
  });
});
