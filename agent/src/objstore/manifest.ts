// The manifest written beside an uploaded snapshot (manifest.json). It is written last, so an
// object without one is an unfinished upload and is never restored. It is plaintext: it names
// the parts' layout and digests, never a byte of guest memory.
import { z } from 'zod';
import { CompressionSchema } from '../../../api/index.js';

export const MANIFEST_FORMAT = 'vmsnap-object/v1';

const ExtentSchema = z.object({ offset: z.number().int().min(0), length: z.number().int().min(1) });

export const ManifestPartSchema = z.object({
  number: z.number().int().min(1),
  segments: z.array(ExtentSchema),
  plainBytes: z.number().int().min(0),
  encodedBytes: z.number().int().min(0),
  storedBytes: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  nonce: z.string().max(32).optional(),
});
export type ManifestPart = z.infer<typeof ManifestPartSchema>;

export const ManifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  fileSize: z.number().int().min(0),
  dataBytes: z.number().int().min(0),
  storedBytes: z.number().int().min(0),
  compression: CompressionSchema,
  /** HMAC of a fixed text under the encryption key: a wrong key is refused before any part is read. */
  keyCheck: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  /** The digests sidecar (spec.digests) uploaded as `digests`, when the snapshot has one. */
  digests: z.boolean(),
  parts: z.array(ManifestPartSchema),
});
export type Manifest = z.infer<typeof ManifestSchema>;

export const OBJECT_KEYS = { manifest: 'manifest.json', data: 'data', digests: 'digests' } as const;

/** Additional authenticated data of a part: its number and the object's prefix. */
export function partAad(prefix: string, number: number): string {
  return `${prefix}${OBJECT_KEYS.data}#${number}`;
}
