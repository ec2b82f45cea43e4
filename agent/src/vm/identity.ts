// Which Pods are VMs on this node, and who they are: namespace, VM name, pod name and uid come
// from the Pod object in the API only, never from a path or anything inside the pod.
import { VM_LABEL } from '../../../api/vm-pod.js';
import { isDns1123Label } from '../daemon/discovery.js';

/** The fields of a Pod that identity depends on (a V1Pod satisfies it). */
export interface PodLike {
  metadata?: { name?: string; namespace?: string; uid?: string; labels?: Record<string, string>; deletionTimestamp?: unknown };
  spec?: { nodeName?: string; containers?: Array<{ volumeMounts?: Array<{ mountPath?: string; readOnly?: boolean }> }> };
  status?: { phase?: string };
}

export interface PodVmIdentity {
  namespace: string;
  /** The VM's name: the value of the vmsnap.io/vm label. */
  name: string;
  podName: string;
  podUid: string;
  /**
   * Where the pod's containers mount volumes read-write (paths inside the pod): the only places a
   * VM pod's writable disk images may lie (vm/pod-disks.ts).
   */
  writableVolumes?: string[];
}

/** The read-write volume mount paths of a pod's containers. */
export function writableVolumesOf(pod: PodLike): string[] {
  const out = new Set<string>();
  for (const c of pod.spec?.containers ?? []) for (const m of c.volumeMounts ?? []) if (m.mountPath && !m.readOnly) out.add(m.mountPath);
  return [...out];
}

export type PodVmVerdict = { ok: true; vm: PodVmIdentity } | { ok: false; reason: string };

/** A Kubernetes object uid: a lowercase RFC 4122 UUID (the kubelet names the pod's directory after it). */
const POD_UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isPodUid(uid: string): boolean {
  return POD_UID.test(uid);
}

/** A Pod on `nodeName` that is a VM the agent may drive now, or why not. */
export function podVmIdentity(pod: PodLike, nodeName: string): PodVmVerdict {
  const m = pod.metadata ?? {};
  const where = `pod ${m.namespace ?? '?'}/${m.name ?? '?'}`;
  const name = m.labels?.[VM_LABEL];
  if (name === undefined) return { ok: false, reason: `${where} has no ${VM_LABEL} label` };
  if (!isDns1123Label(name)) return { ok: false, reason: `${where}: its ${VM_LABEL} label "${name.slice(0, 80)}" is not a DNS-1123 label (the VM's name)` };
  if (!m.namespace || !m.name) return { ok: false, reason: `${where} has no namespace or name` };
  if (!m.uid || !isPodUid(m.uid)) return { ok: false, reason: `${where} has no valid uid` };
  if (pod.spec?.nodeName !== nodeName) return { ok: false, reason: `${where} is not on node ${nodeName}` };
  if (m.deletionTimestamp) return { ok: false, reason: `${where} is being deleted` };
  if (pod.status?.phase !== 'Running') return { ok: false, reason: `${where} is not Running (phase ${pod.status?.phase ?? 'unknown'})` };
  return { ok: true, vm: { namespace: m.namespace, name, podName: m.name, podUid: m.uid, writableVolumes: writableVolumesOf(pod) } };
}

export interface PodVmSelection {
  vms: PodVmIdentity[];
  /** Pods that are not usable VMs, with the reason (for logs). */
  skipped: Array<{ pod: string; reason: string }>;
}

/**
 * The VMs among a list of Pods. Two Running pods claiming the same namespace/VM name are both
 * refused: which one a VMSnapshot means is not for the agent to guess.
 */
export function selectPodVms(pods: readonly PodLike[], nodeName: string): PodVmSelection {
  const byKey = new Map<string, PodVmIdentity[]>();
  const skipped: PodVmSelection['skipped'] = [];
  for (const pod of pods) {
    const v = podVmIdentity(pod, nodeName);
    if (!v.ok) {
      skipped.push({ pod: `${pod.metadata?.namespace ?? '?'}/${pod.metadata?.name ?? '?'}`, reason: v.reason });
      continue;
    }
    const key = `${v.vm.namespace}/${v.vm.name}`;
    byKey.set(key, [...(byKey.get(key) ?? []), v.vm]);
  }
  const vms: PodVmIdentity[] = [];
  for (const [key, list] of byKey) {
    if (list.length === 1) {
      vms.push(list[0]!);
      continue;
    }
    for (const vm of list) {
      skipped.push({
        pod: `${vm.namespace}/${vm.podName}`,
        reason: `VM ${key} is claimed by ${list.length} Running pods (${list.map((p) => p.podName).join(', ')}): give each VM pod its own ${VM_LABEL} value`,
      });
    }
  }
  vms.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  return { vms, skipped };
}
