// Where a VMRestore runs: the snapshot's node, or spec.nodeName, whose agent then fetches the
// snapshot from its class's repository (so the snapshot must be uploaded first).
import { UploadPhase, type VMRestore, type VMSnapshot } from '../api/index.js';

export type RemoteRestore = { kind: 'ok'; node: string } | { kind: 'wait'; message: string } | { kind: 'fail'; message: string };

export function remoteRestoreCheck(restore: Pick<VMRestore, 'spec'>, snapshot: Pick<VMSnapshot, 'metadata' | 'status'>): RemoteRestore {
  const home = snapshot.status!.nodeName!;
  const wanted = restore.spec.nodeName;
  if (!wanted || wanted === home) return { kind: 'ok', node: home };
  const name = snapshot.metadata.name;
  if (!snapshot.status?.effective?.repository) {
    return { kind: 'fail', message: `VMSnapshot "${name}" is on node ${home} and its class has no repository: it cannot be restored on node ${wanted} (spec.nodeName)` };
  }
  const upload = snapshot.status.upload;
  if (upload?.phase === UploadPhase.Uploaded) return { kind: 'ok', node: wanted };
  if (upload?.phase === UploadPhase.Failed) {
    return { kind: 'fail', message: `VMSnapshot "${name}" failed to upload (${upload.message ?? 'no reason recorded'}): it cannot be restored on node ${wanted} (spec.nodeName)` };
  }
  return { kind: 'wait', message: `waiting for VMSnapshot "${name}" to be uploaded to its repository before restoring it on node ${wanted}` };
}
