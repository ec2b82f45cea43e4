// What the operator records of a VM pod when it assigns a save (VMSnapshot status.vmPod), and the
// pod it makes from that record for a copy or a wake. Pure: objects in, objects out.
import {
  API_VERSION,
  RECORDED_POD_SPEC_MAX_BYTES,
  VMRESTORE_KIND,
  VM_LABEL,
  VM_LAUNCHER_START_ENV,
  VM_RUN_VOLUME,
  type RecordedVMPod,
} from '../api/index.js';

/** The fields of a Pod the operator reads (a V1Pod from the informer satisfies it). */
export interface PodView {
  metadata: {
    name?: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: Array<{ uid?: string; kind?: string; name?: string; apiVersion?: string; controller?: boolean; blockOwnerDeletion?: boolean }>;
    deletionTimestamp?: string | Date;
    creationTimestamp?: string | Date;
    resourceVersion?: string;
  };
  spec?: Record<string, unknown> & { nodeName?: string };
  status?: {
    phase?: string;
    reason?: string;
    message?: string;
    conditions?: Array<{ type?: string; status?: string; reason?: string; message?: string }>;
    containerStatuses?: Array<{ name?: string; state?: { waiting?: { reason?: string; message?: string }; terminated?: { reason?: string; exitCode?: number } } }>;
  };
}

/** Marks the pods the operator made for a VMRestore; annotations name the restore and the snapshot. */
export const RESTORE_POD_LABEL = 'vmsnap.io/restore-pod';
export const RESTORE_ANNOTATION = 'vmsnap.io/restore';
export const SNAPSHOT_ANNOTATION = 'vmsnap.io/snapshot';

// Labels a controller put on the pod it made: copied, they would let that controller adopt (and
// scale away) the new pod, or count it as one of its own.
const CONTROLLER_LABELS = [
  'pod-template-hash',
  'controller-revision-hash',
  'statefulset.kubernetes.io/pod-name',
  'apps.kubernetes.io/pod-index',
  'job-name',
  'controller-uid',
  'pod-template-generation',
];
const CONTROLLER_LABEL_PREFIXES = ['batch.kubernetes.io/'];
const DROPPED_ANNOTATIONS = ['kubectl.kubernetes.io/last-applied-configuration'];

// Set by the API server or its admission on every create, recomputed for the new pod: copied, a
// stale value is refused (priority) or pins what should not be pinned (nodeName).
const DROPPED_SPEC_FIELDS = ['nodeName', 'ephemeralContainers', 'priority', 'preemptionPolicy', 'serviceAccount'];

/** The service-account token volume the API server adds (`kube-api-access-<random>`); a new pod gets its own. */
const isInjectedTokenVolume = (v: { name?: string; projected?: unknown }) => !!v.projected && /^kube-api-access-[a-z0-9]+$/.test(v.name ?? '');

type Container = { name?: string; env?: Array<{ name?: string; value?: string }>; volumeMounts?: Array<{ name?: string; mountPath?: string }> };

function withoutMounts(containers: unknown, dropped: Set<string>): unknown {
  if (!Array.isArray(containers)) return containers;
  return (containers as Container[]).map((c) => (c.volumeMounts ? { ...c, volumeMounts: c.volumeMounts.filter((m) => !dropped.has(m.name ?? '')) } : c));
}

/** A Pod as recorded on the VMSnapshot, or why it cannot be (too large). */
export function recordVmPod(pod: PodView): { ok: true; record: RecordedVMPod } | { ok: false; reason: string } {
  const spec: Record<string, unknown> = structuredClone(pod.spec ?? {});
  for (const f of DROPPED_SPEC_FIELDS) delete spec[f];
  const volumes = Array.isArray(spec.volumes) ? (spec.volumes as Array<{ name?: string; projected?: unknown }>) : [];
  const injected = new Set(volumes.filter(isInjectedTokenVolume).map((v) => v.name!));
  if (injected.size > 0) {
    spec.volumes = volumes.filter((v) => !injected.has(v.name ?? ''));
    spec.containers = withoutMounts(spec.containers, injected);
    spec.initContainers = withoutMounts(spec.initContainers, injected);
    if (spec.initContainers === undefined) delete spec.initContainers;
  }
  const labels = Object.fromEntries(
    Object.entries(pod.metadata.labels ?? {}).filter(([k]) => !CONTROLLER_LABELS.includes(k) && !CONTROLLER_LABEL_PREFIXES.some((p) => k.startsWith(p))),
  );
  const annotations = Object.fromEntries(Object.entries(pod.metadata.annotations ?? {}).filter(([k]) => !DROPPED_ANNOTATIONS.includes(k)));
  const record: RecordedVMPod = { name: pod.metadata.name ?? '', uid: pod.metadata.uid ?? '', labels, annotations, spec };
  const bytes = Buffer.byteLength(JSON.stringify(record));
  if (bytes > RECORDED_POD_SPEC_MAX_BYTES) {
    return { ok: false, reason: `pod ${pod.metadata.name}'s spec is ${bytes} bytes, over the ${RECORDED_POD_SPEC_MAX_BYTES} a VMSnapshot records` };
  }
  return { ok: true, record };
}

export interface RestorePodTarget {
  namespace: string;
  /** The VM restored into: the pod's name and its vmsnap.io/vm label. */
  vmName: string;
  node: string;
  restore: { name: string; uid: string };
  snapshotName: string;
}

/** The launcher container: the one that mounts the run volume (the agent reaches its sockets there). */
function launcherContainerIndex(containers: Container[]): number {
  return containers.findIndex((c) => (c.volumeMounts ?? []).some((m) => m.name === VM_RUN_VOLUME));
}

/**
 * The new pod of a copy or a wake: the recorded spec in the restore's namespace, named after the
 * target VM, pinned to the snapshot's node, owned by the VMRestore (deleting a restore that has not
 * finished deletes its pod), with the launcher told to start QEMU with `-incoming defer`.
 */
export function restorePodManifest(record: RecordedVMPod, t: RestorePodTarget): { ok: true; pod: PodView & { apiVersion: string; kind: string } } | { ok: false; reason: string } {
  const spec: Record<string, unknown> = structuredClone(record.spec);
  const containers = Array.isArray(spec.containers) ? (spec.containers as Container[]) : [];
  const i = launcherContainerIndex(containers);
  if (i < 0) return { ok: false, reason: `the recorded pod ${record.name} has no container that mounts the ${VM_RUN_VOLUME} volume (the vmsnap launcher's)` };
  const launcher = containers[i]!;
  launcher.env = [...(launcher.env ?? []).filter((e) => e.name !== VM_LAUNCHER_START_ENV), { name: VM_LAUNCHER_START_ENV, value: 'incoming' }];
  spec.nodeName = t.node;
  return {
    ok: true,
    pod: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: t.vmName,
        namespace: t.namespace,
        labels: { ...record.labels, [VM_LABEL]: t.vmName, [RESTORE_POD_LABEL]: 'true' },
        annotations: { ...record.annotations, [RESTORE_ANNOTATION]: t.restore.name, [SNAPSHOT_ANNOTATION]: t.snapshotName },
        ownerReferences: [{ apiVersion: API_VERSION, kind: VMRESTORE_KIND, name: t.restore.name, uid: t.restore.uid, controller: true, blockOwnerDeletion: false }],
      },
      spec,
    },
  };
}

export const ownedBy = (pod: PodView, uid: string | undefined) => !!uid && (pod.metadata.ownerReferences ?? []).some((o) => o.uid === uid);

/** Why a pod is not coming up, from its status: the waiting container's reason, else the phase. */
export function podTrouble(pod: PodView): string {
  const s = pod.status ?? {};
  for (const c of s.containerStatuses ?? []) {
    const w = c.state?.waiting;
    if (w?.reason && w.reason !== 'ContainerCreating') return `container ${c.name}: ${w.reason}${w.message ? `: ${w.message.slice(0, 300)}` : ''}`;
    const t = c.state?.terminated;
    if (t) return `container ${c.name} terminated: ${t.reason ?? `exit code ${t.exitCode}`}`;
  }
  const unscheduled = s.conditions?.find((c) => c.status === 'False' && c.message);
  return `phase ${s.phase ?? 'unknown'}${s.reason ? ` (${s.reason})` : ''}${unscheduled ? `: ${unscheduled.message!.slice(0, 300)}` : ''}`;
}
