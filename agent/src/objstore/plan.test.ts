import {
  DEFAULT_PART_BYTES,
  S3_MAX_PARTS,
  S3_MIN_PART_BYTES,
  choosePartBytes,
  describePart,
  extentsFromFlat,
  objectRanges,
  planParts,
  rangeHeader,
  storedLength,
} from './plan.js';

const MiB = 1 << 20;

describe('extentsFromFlat', () => {
  it('merges adjacent extents and clips to the file size', () => {
    expect(extentsFromFlat([0, 4096, 4096, 4096, 16384, 8192, 1_000_000, 10], 1_000_005)).toEqual([
      { offset: 0, length: 8192 },
      { offset: 16384, length: 8192 },
      { offset: 1_000_000, length: 5 },
    ]);
  });
  it('a file of holes has no extents', () => {
    expect(extentsFromFlat([], 1 << 30)).toEqual([]);
  });
});

describe('planParts', () => {
  it('cuts extents at part boundaries and keeps every byte exactly once, in order', () => {
    const extents = [
      { offset: 0, length: 3 * MiB },
      { offset: 10 * MiB, length: 6 * MiB },
      { offset: 100 * MiB, length: 1 },
    ];
    const parts = planParts(extents, 4 * MiB);
    expect(parts.map((p) => p.bytes)).toEqual([4 * MiB, 4 * MiB, 1 * MiB + 1]);
    expect(parts.map((p) => p.number)).toEqual([1, 2, 3]);
    expect(parts[0]!.segments).toEqual([
      { offset: 0, length: 3 * MiB },
      { offset: 10 * MiB, length: MiB },
    ]);
    const flat = parts.flatMap((p) => p.segments);
    expect(flat.reduce((n, s) => n + s.length, 0)).toBe(9 * MiB + 1);
    for (let i = 1; i < flat.length; i++) expect(flat[i]!.offset).toBeGreaterThanOrEqual(flat[i - 1]!.offset + flat[i - 1]!.length);
  });
  it('an all-hole file still has one (empty) part, so the multipart upload completes', () => {
    expect(planParts([], 4 * MiB)).toEqual([{ number: 1, segments: [], bytes: 0 }]);
  });
  it('refuses a non-positive part size', () => {
    expect(() => planParts([], 0)).toThrow(/partBytes/);
  });
});

describe('choosePartBytes', () => {
  it('keeps the default for ordinary sizes and grows to stay under S3 part count', () => {
    expect(choosePartBytes(8 << 30)).toBe(DEFAULT_PART_BYTES);
    const big = 4 * 1024 * 1024 * MiB; // 4 TiB
    const size = choosePartBytes(big);
    expect(size % MiB).toBe(0);
    expect(Math.ceil(big / size)).toBeLessThanOrEqual(S3_MAX_PARTS);
  });
});

describe('stored layout', () => {
  it('pads every part but the last to S3 minimum and reads only the encoded bytes', () => {
    expect(storedLength(1000, false)).toBe(S3_MIN_PART_BYTES);
    expect(storedLength(1000, true)).toBe(1000);
    expect(storedLength(9 * MiB, false)).toBe(9 * MiB);
    const parts = [
      { number: 1, encodedBytes: 1000, storedBytes: S3_MIN_PART_BYTES },
      { number: 2, encodedBytes: 9 * MiB, storedBytes: 9 * MiB },
      { number: 3, encodedBytes: 7, storedBytes: 7 },
    ];
    const ranges = objectRanges(parts);
    expect(ranges).toEqual([
      { number: 1, start: 0, length: 1000 },
      { number: 2, start: S3_MIN_PART_BYTES, length: 9 * MiB },
      { number: 3, start: S3_MIN_PART_BYTES + 9 * MiB, length: 7 },
    ]);
    expect(rangeHeader(ranges[0]!)).toBe('bytes=0-999');
  });
  it('names a part by its file bytes', () => {
    expect(describePart({ number: 3, segments: [{ offset: 4096, length: 10 }, { offset: 8192, length: 8 }] })).toBe('part 3 (file bytes 4096..8200)');
  });
});
