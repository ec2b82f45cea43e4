// Waits for VMSnapshots or VMRestores to end by watching them, as `kubectl
// wait` does, instead of polling: a GET every few ms costs the API server and
// etcd the CPU that the work being timed needs on a 2-core machine.
import { startInformer, type Kube, type KubeObject, type ResilientInformer } from '../kube/client.js';

type Status = Record<string, any>;
interface Watched extends KubeObject {
  status?: Status;
}

export class PhaseWatch {
  private readonly waiters = new Map<string, { resolve: (s: Status) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly resource: 'vmSnapshot' | 'vmRestore',
    private informer?: ResilientInformer<Watched>,
  ) {}

  /** Watches every object of the resource; resolves once the first list has arrived. */
  static async start(kube: Kube, resource: 'vmSnapshot' | 'vmRestore'): Promise<PhaseWatch> {
    const watch = new PhaseWatch(resource);
    watch.informer = startInformer<Watched>(kube, resource, { onChange: (o) => watch.seen(o) });
    await watch.informer.synced;
    return watch;
  }

  /** The object's status once it is Succeeded (the moment the watch delivers it); rejects when it Failed. */
  until(namespace: string, name: string): Promise<Status> {
    const key = `${namespace}/${name}`;
    const done = new Promise<Status>((resolve, reject) => this.waiters.set(key, { resolve, reject }));
    const cached = this.informer?.informer.get(name, namespace);
    if (cached) this.seen(cached);
    return done;
  }

  async stop(): Promise<void> {
    await this.informer?.stop();
  }

  private seen(o: Watched): void {
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    const waiter = this.waiters.get(key);
    const phase = o.status?.phase;
    if (!waiter || (phase !== 'Succeeded' && phase !== 'Failed')) return;
    this.waiters.delete(key);
    if (phase === 'Succeeded') waiter.resolve(o.status!);
    else waiter.reject(new Error(`${this.resource} ${key} failed: ${o.status?.error?.message}`));
  }
}
