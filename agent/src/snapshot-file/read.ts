// Reading a header back: the binary layout checked field by field, with the
// MAC and the VMSnapshot identity when the reader holds the node's key
// (raw-header.ts), then the metadata parsed with its zod schema (kept out of
// header.ts so that a save, which only writes headers, does not pay for loading zod).
import { SnapshotFileError, type HeaderTrust, type SnapshotHeader } from './header.js';
import { SnapshotMetadataSchema } from './metadata.js';
import { decodeRawHeader, readHeaderBytes } from './raw-header.js';

/** Parses a header, refusing anything that is not a well-formed vmsnap header (or, with `trust`, not this agent's). */
export function decodeHeader(buf: Buffer, what = 'file', trust?: HeaderTrust): SnapshotHeader {
  const raw = decodeRawHeader(buf, what, trust);
  const result = SnapshotMetadataSchema.safeParse(raw.metadata);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new SnapshotFileError(`${what} has invalid metadata at ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  if (result.data.stream.offset !== raw.streamOffset) {
    throw new SnapshotFileError(`${what} has a corrupted header (stream offsets disagree)`);
  }
  return { ...raw, metadata: result.data };
}

export function readHeader(path: string, trust?: HeaderTrust): SnapshotHeader {
  return decodeHeader(readHeaderBytes(path), path, trust);
}
