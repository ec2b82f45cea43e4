// The daemon's VMs when vmSource is 'pods': Pods on this node labelled vmsnap.io/vm, listed from
// the API, their QMP and launcher sockets reached beneath the pod's run volume with the peer
// checked (connect.ts). Implements the same VmFinder as the socket-glob discovery.
import type { Kube } from '../../../kube/client.js';
import { VM_LABEL, VM_LAUNCHER_SOCKET, VM_QMP_SOCKET, type LauncherRequest } from '../../../api/vm-pod.js';
import type { DiscoveredVm, VmFinder } from '../daemon/discovery.js';
import type { Probe } from '../daemon/qemu-control.js';
import { QmpConnectError } from '../qmp/errors.js';
import { connectPodQmp, connectPodStream, PeerRefusedError, SocketRefusedError } from './connect.js';
import { selectPodVms, type PodVmIdentity } from './identity.js';
import { launcherRequest } from './launcher-client.js';
import { socketNodePath } from './run-volume.js';

/** restart-incoming waits for QEMU to quit (then SIGKILL after the launcher's grace) and start again. */
export const LAUNCHER_RESTART_TIMEOUT_MS = 120_000;
const LAUNCHER_CONNECT_TIMEOUT_MS = 5_000;

export class PodVms implements VmFinder {
  readonly source = 'pods';
  private readonly reported = new Set<string>();

  constructor(
    private readonly kube: Kube,
    private readonly nodeName: string,
    private readonly kubeletRootDir: string,
    private readonly onSkip: (pod: string, reason: string) => void = () => undefined,
  ) {}

  async scan(): Promise<DiscoveredVm[]> {
    const pods = await this.kube.listPods({ fieldSelector: `spec.nodeName=${this.nodeName}`, labelSelector: VM_LABEL });
    const { vms, skipped } = selectPodVms(pods, this.nodeName);
    for (const s of skipped) {
      const key = `${s.pod}\n${s.reason}`;
      if (this.reported.has(key)) continue;
      this.reported.add(key);
      this.onSkip(s.pod, s.reason);
    }
    return vms.map((pod) => ({ namespace: pod.namespace, name: pod.name, qmpSocket: socketNodePath(this.kubeletRootDir, pod.podUid, VM_QMP_SOCKET), pod }));
  }

  async find(namespace: string, name: string): Promise<DiscoveredVm | undefined> {
    return (await this.scan()).find((vm) => vm.namespace === namespace && vm.name === name);
  }

  async probe(vm: DiscoveredVm, timeoutMs: number): Promise<Probe> {
    try {
      return { kind: 'answers', client: await connectPodQmp(this.kubeletRootDir, podOf(vm), VM_QMP_SOCKET, timeoutMs) };
    } catch (err) {
      const message = (err as Error).message;
      if (err instanceof SocketRefusedError && err.code === 'ENOENT') return this.absent(vm, message, timeoutMs);
      if (err instanceof PeerRefusedError || err instanceof SocketRefusedError) return { kind: 'unreachable', message };
      if (err instanceof QmpConnectError && err.nobodyListens) return this.absent(vm, message, timeoutMs);
      return { kind: 'unreachable', message };
    }
  }

  /** No QMP: `stopped` when the pod's launcher says it runs no QEMU (after a hibernate or an exit). */
  private async absent(vm: DiscoveredVm, message: string, timeoutMs: number): Promise<Probe> {
    const status = await this.launcher(vm, { op: 'status' }, timeoutMs).catch(() => undefined);
    if (status?.state !== 'stopped') return { kind: 'absent', message };
    const exit = status.lastExit ? `; its last QEMU exited with ${status.lastExit.signal ?? `code ${status.lastExit.code}`}` : '';
    return {
      kind: 'absent',
      stopped: true,
      message: `no QEMU runs in VM pod ${vm.pod!.podName}: its launcher is up and stopped${exit} (after a hibernate: a VMRestore brings it back)`,
    };
  }

  /** A QMP connection for an operation (save, restore): errors say what is wrong. */
  async connectQmp(vm: DiscoveredVm, timeoutMs?: number) {
    return connectPodQmp(this.kubeletRootDir, podOf(vm), VM_QMP_SOCKET, timeoutMs);
  }

  /** One request to the VM pod's launcher (`fd`: the snapshot of a lazy restart-incoming). */
  async launcher(vm: DiscoveredVm, request: LauncherRequest, timeoutMs: number, fd?: number) {
    const socket = await connectPodStream(this.kubeletRootDir, podOf(vm), VM_LAUNCHER_SOCKET, LAUNCHER_CONNECT_TIMEOUT_MS);
    return launcherRequest(socket, request, timeoutMs, fd);
  }

  describeSearch(namespace: string, name: string): string {
    return `looked for a Running pod labelled ${VM_LABEL}=${name} in namespace ${namespace} on node ${this.nodeName}`;
  }
}

function podOf(vm: DiscoveredVm): PodVmIdentity {
  if (!vm.pod) throw new Error(`VM ${vm.namespace}/${vm.name} was not found as a pod`);
  return vm.pod;
}

export function isPodVms(finder: VmFinder): finder is PodVms {
  return finder instanceof PodVms;
}
