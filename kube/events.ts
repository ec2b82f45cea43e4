// Kubernetes Events that tell an object's story in `kubectl describe`.
import type { Kube, KubeObject } from './client.js';

export type EventType = 'Normal' | 'Warning';

export class EventRecorder {
  constructor(
    private readonly kube: Kube,
    /** e.g. "vmsnap-operator" or "vmsnap-agent/node-a". */
    private readonly component: string,
    private readonly log: (msg: string, err: unknown) => void = () => undefined,
  ) {}

  /** Best effort: an event that cannot be written never fails the work it describes. */
  async record(obj: KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    const ns = obj.metadata.namespace ?? 'default';
    const now = new Date();
    try {
      await this.kube.core.createNamespacedEvent({
        namespace: ns,
        body: {
          metadata: { generateName: `${obj.metadata.name}.`, namespace: ns },
          involvedObject: {
            apiVersion: obj.apiVersion,
            kind: obj.kind,
            name: obj.metadata.name,
            namespace: obj.metadata.namespace,
            uid: obj.metadata.uid,
            resourceVersion: obj.metadata.resourceVersion,
          },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: this.component },
          reportingComponent: this.component.split('/')[0],
          reportingInstance: this.component,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    } catch (err) {
      this.log(`cannot record event ${reason} on ${ns}/${obj.metadata.name}`, err);
    }
  }
}
