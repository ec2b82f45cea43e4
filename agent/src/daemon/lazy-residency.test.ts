import { lazyStatus, residencyChanged } from './lazy-residency.js';

const now = new Date('2026-01-01T00:00:00Z');
const GiB = 2 ** 30;

describe('status.lazy', () => {
  it('reports residency as bytes and a percentage of the mapped RAM', () => {
    expect(lazyStatus('/s/f.vms', GiB, { mappedBytes: GiB, residentBytes: GiB / 4, privateBytes: 4096, sharedBytes: GiB / 8 }, now)).toEqual({
      file: '/s/f.vms',
      mappedBytes: GiB,
      residentBytes: GiB / 4,
      residentPercent: 25,
      privateBytes: 4096,
      sharedBytes: GiB / 8,
      vmRunning: true,
      measuredAt: '2026-01-01T00:00:00.000Z',
    });
  });

  it('says when the VM is gone', () => {
    expect(lazyStatus('/s/f.vms', GiB, undefined, now)).toEqual({ file: '/s/f.vms', mappedBytes: GiB, vmRunning: false, measuredAt: now.toISOString() });
  });

  it('writes only changes of at least 1% of the RAM, or the VM exiting', () => {
    const base = lazyStatus('/f', GiB, { mappedBytes: GiB, residentBytes: GiB / 2, privateBytes: 0, sharedBytes: 0 }, now);
    const step = (bytes: number) => lazyStatus('/f', GiB, { mappedBytes: GiB, residentBytes: GiB / 2 + bytes, privateBytes: 0, sharedBytes: 0 }, now);
    expect(residencyChanged(undefined, base)).toBe(true);
    expect(residencyChanged(base, step(GiB / 200))).toBe(false);
    expect(residencyChanged(base, step(GiB / 50))).toBe(true);
    expect(residencyChanged(base, lazyStatus('/f', GiB, undefined, now))).toBe(true);
  });
});
