import { formatBytes, formatDurationMs, formatThroughput, throughputMiBps } from './format.js';

describe('display formatting', () => {
  it.each([
    [0, '0'],
    [1000, '1000'],
    [1024, '1Ki'],
    [1536 * 1024 * 1024, '1.5Gi'],
    [4 * 1024 ** 3, '4Gi'],
    [512 * 1024 ** 2, '512Mi'],
    [3 * 1024 ** 4, '3Ti'],
  ])('formatBytes(%d) = %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it.each([
    [850, '850ms'],
    [12_345, '12.3s'],
    [125_000, '2m5s'],
    [120_000, '2m'],
    [3_720_000, '1h2m'],
    [7_200_000, '2h'],
  ])('formatDurationMs(%d) = %s', (ms, text) => {
    expect(formatDurationMs(ms)).toBe(text);
  });

  it('computes and formats throughput', () => {
    expect(throughputMiBps(4 * 1024 ** 3, 2000)).toBe(2048);
    expect(throughputMiBps(1, 0)).toBe(0);
    expect(formatThroughput(2048)).toBe('2GiB/s');
    expect(formatThroughput(1843.2)).toBe('1.8GiB/s');
    expect(formatThroughput(950)).toBe('950MiB/s');
  });
});
