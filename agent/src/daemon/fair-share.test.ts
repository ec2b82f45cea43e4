import { pickWork, type QueuedWork } from './fair-share.js';

const work = (id: string, namespace: string, since = '2026-01-01T00:00:00Z'): QueuedWork => ({ id, namespace, since });
const ids = (ws: QueuedWork[]) => ws.map((w) => w.id);
const none = new Map<string, number>();

describe('pickWork', () => {
  it('never lets one namespace take every slot while another waits', () => {
    // The tenant queued first and holds one slot already; the victim queued later.
    const queued = [work('t2', 'tenant', '2026-01-01T00:00:01Z'), work('t3', 'tenant', '2026-01-01T00:00:02Z'), work('v1', 'victim', '2026-01-01T00:00:09Z')];
    expect(ids(pickWork(queued, { total: 2, perNamespace: 1, running: ['tenant'], lastServed: none }))).toEqual(['v1']);
    // Even with nobody else waiting, the tenant stays at its share: a later arrival finds a slot.
    expect(ids(pickWork(queued.slice(0, 2), { total: 2, perNamespace: 1, running: ['tenant'], lastServed: none }))).toEqual([]);
    expect(ids(pickWork(queued.slice(0, 2), { total: 4, perNamespace: 3, running: [], lastServed: none }))).toEqual(['t2', 't3']);
  });

  it('fills free slots with the namespaces that hold the fewest, oldest work first within each', () => {
    const queued = [work('a2', 'a', '2026-01-01T00:00:02Z'), work('a1', 'a', '2026-01-01T00:00:01Z'), work('b1', 'b', '2026-01-01T00:00:05Z'), work('c1', 'c', '2026-01-01T00:00:03Z')];
    expect(ids(pickWork(queued, { total: 4, perNamespace: 3, running: ['a'], lastServed: none }))).toEqual(['b1', 'c1', 'a1']);
  });

  it('takes turns between equals: the namespace served least recently goes first', () => {
    const queued = [work('a1', 'a'), work('b1', 'b'), work('c1', 'c')];
    const lastServed = new Map([['a', 7], ['b', 3]]); // c never served
    expect(ids(pickWork(queued, { total: 3, perNamespace: 1, running: ['x', 'y'], lastServed }))).toEqual(['c1']);
    expect(ids(pickWork(queued, { total: 4, perNamespace: 1, running: ['x', 'y'], lastServed }))).toEqual(['c1', 'b1']);
  });

  it('starts nothing when every slot is taken, and never more than the free slots', () => {
    expect(pickWork([work('a1', 'a')], { total: 2, perNamespace: 1, running: ['b', 'c'], lastServed: none })).toEqual([]);
    expect(pickWork([work('a1', 'a')], { total: 2, perNamespace: 1, running: ['b', 'c', 'd'], lastServed: none })).toEqual([]);
    const many = Array.from({ length: 10 }, (_, i) => work(`w${i}`, `ns${i}`));
    expect(pickWork(many, { total: 3, perNamespace: 1, running: [], lastServed: none })).toHaveLength(3);
  });

  it('with one slot, namespaces take turns', () => {
    const queued = [work('a2', 'a'), work('b1', 'b')];
    expect(ids(pickWork(queued, { total: 1, perNamespace: 1, running: [], lastServed: new Map([['a', 1]]) }))).toEqual(['b1']);
  });
});
