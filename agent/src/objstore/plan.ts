// Pure planning of an upload's parts and a download's ranged reads. A snapshot file is sparse
// (mapped-ram writes each page at its own offset; untouched RAM is a hole), so only its data
// extents travel: they are cut into parts of about `partBytes` of data each, every part is
// encoded on its own (compressed, encrypted) and becomes one S3 multipart part.

export interface Extent {
  offset: number;
  length: number;
}

export interface PartPlan {
  /** 1-based, as S3 numbers multipart parts. */
  number: number;
  /** The file regions this part carries, in file order. */
  segments: Extent[];
  /** Sum of the segments' lengths (plaintext bytes). */
  bytes: number;
}

/** S3's multipart rules: every part but the last at least 5 MiB, at most 10,000 parts. */
export const S3_MIN_PART_BYTES = 5 << 20;
export const S3_MAX_PARTS = 10_000;
export const DEFAULT_PART_BYTES = 16 << 20;
const ALIGN = 1 << 20;

/** Data extents from the native [offset, length, ...] list, clipped to the file, adjacent ones merged. */
export function extentsFromFlat(flat: readonly number[], fileSize: number): Extent[] {
  const out: Extent[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const offset = flat[i]!;
    const end = Math.min(offset + flat[i + 1]!, fileSize);
    if (end <= offset) continue;
    const last = out[out.length - 1];
    if (last && last.offset + last.length >= offset) last.length = Math.max(last.length, end - last.offset);
    else out.push({ offset, length: end - offset });
  }
  return out;
}

/**
 * The plaintext size of a part: `preferred`, grown (in whole MiB) when the data would otherwise
 * need more parts than S3 allows (a margin of 10% stays for extent boundaries).
 */
export function choosePartBytes(dataBytes: number, preferred = DEFAULT_PART_BYTES): number {
  const needed = Math.ceil(dataBytes / (S3_MAX_PARTS * 0.9));
  return Math.max(preferred, Math.ceil(needed / ALIGN) * ALIGN);
}

/** Cuts the extents into parts of `partBytes` data each (the last may be shorter). */
export function planParts(extents: readonly Extent[], partBytes: number): PartPlan[] {
  if (!(partBytes > 0)) throw new Error(`partBytes must be positive, got ${partBytes}`);
  const parts: PartPlan[] = [];
  let cur: PartPlan = { number: 1, segments: [], bytes: 0 };
  for (const ext of extents) {
    let offset = ext.offset;
    let left = ext.length;
    while (left > 0) {
      const take = Math.min(left, partBytes - cur.bytes);
      cur.segments.push({ offset, length: take });
      cur.bytes += take;
      offset += take;
      left -= take;
      if (cur.bytes === partBytes) {
        parts.push(cur);
        cur = { number: cur.number + 1, segments: [], bytes: 0 };
      }
    }
  }
  if (cur.bytes > 0 || parts.length === 0) parts.push(cur);
  return parts;
}

/**
 * How many bytes a part occupies in the object: its encoded length, padded up to S3's minimum
 * for every part but the last (the manifest records the encoded length; the pad is never read).
 */
export function storedLength(encodedBytes: number, isLast: boolean): number {
  return isLast ? encodedBytes : Math.max(encodedBytes, S3_MIN_PART_BYTES);
}

export interface ObjectRange {
  number: number;
  /** First byte of the part in the object. */
  start: number;
  /** Encoded bytes to read (the pad after them is skipped). */
  length: number;
}

/** Where each part's encoded bytes sit in the object, from the parts' encoded and stored lengths. */
export function objectRanges(parts: ReadonlyArray<{ number: number; encodedBytes: number; storedBytes: number }>): ObjectRange[] {
  let start = 0;
  return parts.map((p) => {
    const r = { number: p.number, start, length: p.encodedBytes };
    start += p.storedBytes;
    return r;
  });
}

/** The HTTP Range header for one part. */
export function rangeHeader(r: ObjectRange): string {
  return `bytes=${r.start}-${r.start + r.length - 1}`;
}

/** A human name for a part in errors: its number and the file bytes it covers. */
export function describePart(p: Pick<PartPlan, 'number' | 'segments'>): string {
  const first = p.segments[0];
  const last = p.segments[p.segments.length - 1];
  if (!first || !last) return `part ${p.number} (empty)`;
  return `part ${p.number} (file bytes ${first.offset}..${last.offset + last.length})`;
}
