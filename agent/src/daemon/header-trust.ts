// What the agent holds against a snapshot file's header: the node's key (under
// the storage root, see engine/header-key.ts) and the VMSnapshot the file
// belongs to, from the API object, never from the file. Every save writes
// both into the header; every restore, recovery and merge reads with them.
import type { VMSnapshot } from '../../../api/index.js';
import type { HeaderTrust } from '../snapshot-file/header.js';
import type { SnapshotIdentity } from '../snapshot-file/metadata.js';
import { nodeHeaderKey } from '../engine/index.js';

export function snapshotIdentity(snap: Pick<VMSnapshot, 'metadata'>): SnapshotIdentity {
  const { namespace, name, uid } = snap.metadata;
  if (!namespace || !name || !uid) throw new Error(`VMSnapshot ${namespace ?? '?'}/${name ?? '?'} lacks a namespace, name or uid`);
  return { namespace, name, uid };
}

export function headerTrust(storageRoot: string, snap: Pick<VMSnapshot, 'metadata'>): Required<HeaderTrust> {
  return { key: nodeHeaderKey(storageRoot), snapshot: snapshotIdentity(snap) };
}
