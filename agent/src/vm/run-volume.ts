// Where a VM pod's run volume (an emptyDir the tenant writes) lies on the node: beneath the
// kubelet's directory of that pod, found by the pod uid from the API. Paths here are relative to
// the pod's directory so that they are opened with openBeneath, never resolved as a whole.
import path from 'node:path';
import { VM_RUN_VOLUME } from '../../../api/vm-pod.js';
import { isPodUid } from './identity.js';

/** `<kubeletRootDir>/pods/<uid>`: created and owned by the kubelet (trusted). */
export function podDir(kubeletRootDir: string, podUid: string): string {
  if (!path.isAbsolute(kubeletRootDir)) throw new Error(`kubeletRootDir must be an absolute path, got "${kubeletRootDir}"`);
  if (!isPodUid(podUid)) throw new Error(`"${podUid.slice(0, 80)}" is not a pod uid`);
  return path.join(path.resolve(kubeletRootDir), 'pods', podUid);
}

/** The run volume relative to the pod's directory (kubelet's emptyDir layout). */
export const RUN_VOLUME_REL = `volumes/kubernetes.io~empty-dir/${VM_RUN_VOLUME}`;

/** A socket name as api/vm-pod.ts defines it: one plain file name, no separators. */
export function socketRelPath(socketName: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(socketName) || socketName.length > 64) {
    throw new Error(`"${socketName.slice(0, 80)}" is not a plain socket file name`);
  }
  return `${RUN_VOLUME_REL}/${socketName}`;
}

/** The socket's path on the node, for messages and the inventory only (never opened as a path). */
export function socketNodePath(kubeletRootDir: string, podUid: string, socketName: string): string {
  return path.join(podDir(kubeletRootDir, podUid), socketRelPath(socketName));
}
