// The Kubernetes access that the operator and the agent share: one client,
// typed helpers for our custom resources (merge patches of status and
// metadata), and informers that restart themselves (client-node 1.x stops an
// informer on any error but 410).
import * as k8s from '@kubernetes/client-node';
import { GROUP, VERSION, RESOURCES } from '../api/index.js';

export type ResourceName = keyof typeof RESOURCES;

export interface ObjectRef {
  namespace?: string;
  name: string;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    deletionTimestamp?: string | Date;
    creationTimestamp?: string | Date;
  };
  [key: string]: unknown;
}

const mergePatch = () => k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

export function loadKubeConfig(): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (process.env.KUBECONFIG) kc.loadFromFile(process.env.KUBECONFIG);
  else kc.loadFromDefault();
  return kc;
}

/** HTTP status of a client-node error, if it has one. */
export function statusCode(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown; response?: { statusCode?: unknown } };
  const c = e?.code ?? e?.statusCode ?? e?.response?.statusCode;
  return typeof c === 'number' ? c : undefined;
}

/** The API server's own words from a client-node error (Status.message), else the error's; at most 800 characters. */
export function apiMessage(err: unknown): string {
  const body = (err as { body?: unknown }).body;
  try {
    const parsed = typeof body === 'string' ? JSON.parse(body) : body;
    if (parsed && typeof (parsed as { message?: unknown }).message === 'string') return String((parsed as { message: string }).message).slice(0, 800);
  } catch {
    /* not JSON */
  }
  return String((err as Error).message ?? err).slice(0, 800);
}

export class Kube {
  readonly custom: k8s.CustomObjectsApi;
  readonly core: k8s.CoreV1Api;
  readonly coordination: k8s.CoordinationV1Api;

  constructor(readonly kc: k8s.KubeConfig = loadKubeConfig()) {
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.coordination = kc.makeApiClient(k8s.CoordinationV1Api);
  }

  private spec(resource: ResourceName) {
    const r = RESOURCES[resource];
    return { group: GROUP, version: VERSION, plural: r.plural, namespaced: r.namespaced };
  }

  async get<T extends KubeObject>(resource: ResourceName, ref: ObjectRef): Promise<T | undefined> {
    const s = this.spec(resource);
    try {
      return (s.namespaced
        ? await this.custom.getNamespacedCustomObject({ ...s, namespace: ref.namespace!, name: ref.name })
        : await this.custom.getClusterCustomObject({ ...s, name: ref.name })) as T;
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw err;
    }
  }

  async list<T extends KubeObject>(resource: ResourceName, opts: { namespace?: string; labelSelector?: string } = {}): Promise<T[]> {
    const s = this.spec(resource);
    const list = (opts.namespace
      ? await this.custom.listNamespacedCustomObject({ ...s, namespace: opts.namespace, labelSelector: opts.labelSelector })
      : await this.custom.listClusterCustomObject({ ...s, labelSelector: opts.labelSelector })) as { items: T[] };
    return list.items;
  }

  /** Merge-patches metadata/spec. Include metadata.resourceVersion to fail on a concurrent change (409). */
  async patch<T extends KubeObject>(resource: ResourceName, ref: ObjectRef, body: object): Promise<T> {
    const s = this.spec(resource);
    return (s.namespaced
      ? await this.custom.patchNamespacedCustomObject({ ...s, namespace: ref.namespace!, name: ref.name, body }, mergePatch())
      : await this.custom.patchClusterCustomObject({ ...s, name: ref.name, body }, mergePatch())) as T;
  }

  /** Merge-patches the status subresource: `{status: {...}}`, optionally with metadata.resourceVersion. */
  async patchStatus<T extends KubeObject>(resource: ResourceName, ref: ObjectRef, body: object): Promise<T> {
    const s = this.spec(resource);
    return (s.namespaced
      ? await this.custom.patchNamespacedCustomObjectStatus({ ...s, namespace: ref.namespace!, name: ref.name, body }, mergePatch())
      : await this.custom.patchClusterCustomObjectStatus({ ...s, name: ref.name, body }, mergePatch())) as T;
  }

  async create<T extends KubeObject>(resource: ResourceName, body: KubeObject): Promise<T> {
    const s = this.spec(resource);
    return (s.namespaced
      ? await this.custom.createNamespacedCustomObject({ ...s, namespace: body.metadata.namespace!, body })
      : await this.custom.createClusterCustomObject({ ...s, body })) as T;
  }

  /** Deletes an object only if it is still the one with `uid`; gone already, or replaced (409), is fine. */
  async delete(resource: ResourceName, ref: ObjectRef & { uid: string }): Promise<void> {
    const s = this.spec(resource);
    try {
      await this.custom.deleteNamespacedCustomObject({ ...s, namespace: ref.namespace!, name: ref.name, body: { preconditions: { uid: ref.uid } } });
    } catch (err) {
      const code = statusCode(err);
      if (code !== 404 && code !== 409) throw err;
    }
  }

  /** Pods in every namespace matching both selectors (the agent: VM pods on its own node). */
  async listPods(opts: { fieldSelector?: string; labelSelector?: string }): Promise<k8s.V1Pod[]> {
    const list = await this.core.listPodForAllNamespaces({ fieldSelector: opts.fieldSelector, labelSelector: opts.labelSelector });
    return list.items;
  }

  /** Creates a pod (the operator: the new pod of a copy or a wake). */
  async createPod(pod: k8s.V1Pod): Promise<k8s.V1Pod> {
    return this.core.createNamespacedPod({ namespace: pod.metadata!.namespace!, body: pod });
  }

  /** Deletes a pod only if it is still the one with `uid` (a pod of the same name made since is left alone). */
  async deletePod(ref: ObjectRef & { uid: string }): Promise<void> {
    try {
      await this.core.deleteNamespacedPod({ namespace: ref.namespace!, name: ref.name, body: { preconditions: { uid: ref.uid } } });
    } catch (err) {
      if (statusCode(err) !== 404) throw err;
    }
  }

  /** Merge-patches a pod's metadata; include metadata.resourceVersion to fail on a concurrent change (409). */
  async patchPod(ref: ObjectRef, body: object): Promise<k8s.V1Pod> {
    return this.core.patchNamespacedPod({ namespace: ref.namespace!, name: ref.name, body }, mergePatch());
  }

  /** The list path an informer watches for a resource (all namespaces). */
  path(resource: ResourceName): string {
    return `/apis/${GROUP}/${VERSION}/${RESOURCES[resource].plural}`;
  }
}

export interface ResilientInformer<T extends KubeObject> {
  informer: k8s.Informer<T & k8s.KubernetesObject> & k8s.ObjectCache<T & k8s.KubernetesObject>;
  /** Resolves after the first list has arrived. */
  synced: Promise<void>;
  stop(): Promise<void>;
}

/**
 * An informer over one of our resources (optionally label-filtered) that
 * restarts with backoff after errors, and resyncs (relists) periodically so
 * that a missed event never leaves work behind.
 */
type InformerHandlers<T> = { onChange: (obj: T) => void; onDelete?: (obj: T) => void; onError?: (err: unknown) => void; onResync?: () => void };
type InformerOptions = { labelSelector?: string; resyncMs?: number };

export function startInformer<T extends KubeObject>(kube: Kube, resource: ResourceName, handlers: InformerHandlers<T>, opts: InformerOptions = {}): ResilientInformer<T> {
  const listFn = () =>
    kube.custom.listClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: RESOURCES[resource].plural,
      labelSelector: opts.labelSelector,
    }) as Promise<k8s.KubernetesListObject<T & k8s.KubernetesObject>>;
  return startResilient(kube, kube.path(resource), listFn, handlers, opts);
}

/** The same over Pods in every namespace (the operator: VM pods, by label). */
export function startPodInformer(kube: Kube, handlers: InformerHandlers<KubeObject>, opts: InformerOptions = {}): ResilientInformer<KubeObject> {
  const listFn = () => kube.core.listPodForAllNamespaces({ labelSelector: opts.labelSelector }) as unknown as Promise<k8s.KubernetesListObject<KubeObject & k8s.KubernetesObject>>;
  return startResilient(kube, '/api/v1/pods', listFn, handlers, opts);
}

function startResilient<T extends KubeObject>(
  kube: Kube,
  path: string,
  listFn: () => Promise<k8s.KubernetesListObject<T & k8s.KubernetesObject>>,
  handlers: InformerHandlers<T>,
  opts: InformerOptions,
): ResilientInformer<T> {
  const informer = k8s.makeInformer<T & k8s.KubernetesObject>(kube.kc, path, listFn, opts.labelSelector);
  let stopped = false;
  let backoffMs = 500;
  let markSynced: () => void = () => undefined;
  const synced = new Promise<void>((r) => (markSynced = r));
  informer.on('add', (o) => handlers.onChange(o as T));
  informer.on('update', (o) => handlers.onChange(o as T));
  informer.on('delete', (o) => handlers.onDelete?.(o as T));
  informer.on('connect', () => {
    backoffMs = 500;
    markSynced();
  });
  const restartLater = (err: unknown) => {
    handlers.onError?.(err);
    if (stopped) return;
    setTimeout(() => {
      if (!stopped) informer.start().then(markSynced, restartLater);
    }, backoffMs).unref();
    backoffMs = Math.min(backoffMs * 2, 30_000);
  };
  informer.on('error', restartLater);
  const resync = setInterval(() => {
    for (const o of informer.list()) handlers.onChange(o as T);
    handlers.onResync?.();
  }, opts.resyncMs ?? 30_000);
  resync.unref();
  informer.start().then(markSynced, restartLater);
  return {
    informer,
    synced,
    async stop() {
      stopped = true;
      clearInterval(resync);
      await informer.stop();
    },
  };
}
