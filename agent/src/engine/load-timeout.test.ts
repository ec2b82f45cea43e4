import { loadQueryTimeoutMs } from './restore.js';

describe('loadQueryTimeoutMs', () => {
  it('keeps the client default for small files and grows with the bytes to load (8 MiB/s)', () => {
    expect(loadQueryTimeoutMs(0)).toBe(30_000);
    expect(loadQueryTimeoutMs(1 << 30)).toBe(128_000);
    expect(loadQueryTimeoutMs(8 * (1 << 30))).toBe(1_024_000);
  });
});
