import { fetchedEntriesToRemove } from './fetch.js';

describe('the cache rule for fetched copies', () => {
  const dir = '/snaps/a/fetched';
  const entries = ['live-1.vms', 'live-1.vms.digests', 'gone-2.vms', 'gone-2.vms.digests', 'gone-3.vms.partial', 'reading-4.vms'];
  it('removes the copies (and their digests, partial downloads) of snapshots that are gone, unless a restore reads them', () => {
    const live = new Set(['live-1.vms']);
    const inUse = new Map([[`${dir}/reading-4.vms`, 1]]);
    expect(fetchedEntriesToRemove(dir, entries, live, inUse)).toEqual(['gone-2.vms', 'gone-2.vms.digests', 'gone-3.vms.partial']);
  });
  it('keeps every copy whose snapshot exists', () => {
    expect(fetchedEntriesToRemove(dir, ['a.vms', 'a.vms.digests'], new Set(['a.vms']), new Map())).toEqual([]);
  });
});
