// Leader election through a coordination.k8s.io Lease, with resourceVersion
// conflicts deciding races (client-node has no leader election of its own).
import type { V1Lease } from '@kubernetes/client-node';
import { statusCode, type Kube } from '../kube/client.js';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  /** A leader that has not renewed for this long stops leading (default: the lease duration). */
  renewDeadlineSeconds?: number;
  renewEveryMs?: number;
  log: (msg: string) => void;
}

/**
 * Lease times are MicroTime (six fractional digits). client-node passes a
 * string through but serialises a Date with milliseconds, which the API refuses.
 */
const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z') as unknown as Date;

export class LeaderElector {
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private lastRenew = 0;
  private stopped = false;
  /** When the API server last answered a lease request (for readiness). */
  lastApiAnswer = 0;

  constructor(
    private readonly kube: Kube,
    private readonly opts: LeaderElectionOptions,
  ) {}

  private get duration(): number {
    return this.opts.leaseDurationSeconds ?? 15;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Resolves once this process leads; `onLost` runs if it stops leading. */
  async acquire(onLost: () => void): Promise<void> {
    for (;;) {
      if (this.stopped) throw new Error('leader election stopped');
      // An API server that is restarting must not end a waiting candidate: ask again.
      const acquired = await this.tryAcquireOrRenew().catch((err: unknown) => {
        this.opts.log(`cannot read or take the lease (${String(err)}); trying again`);
        return false;
      });
      if (acquired) break;
      await new Promise((r) => setTimeout(r, this.opts.renewEveryMs ?? 2_000));
    }
    this.leading = true;
    this.opts.log(`became leader (lease ${this.opts.namespace}/${this.opts.name})`);
    this.timer = setInterval(async () => {
      const ok = await this.tryAcquireOrRenew().catch(() => false);
      if (ok) return;
      if (Date.now() - this.lastRenew > (this.opts.renewDeadlineSeconds ?? this.duration) * 1000 && this.leading) {
        this.leading = false;
        clearInterval(this.timer);
        this.opts.log('lost leadership');
        onLost();
      }
    }, this.opts.renewEveryMs ?? 2_000);
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.opts;
    const now = new Date();
    let lease: V1Lease | undefined;
    try {
      lease = await this.kube.coordination.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (statusCode(err) !== 404) throw err;
    }
    this.lastApiAnswer = Date.now();
    const spec = { holderIdentity: identity, leaseDurationSeconds: this.duration, renewTime: microTime(now) };
    if (!lease) {
      try {
        await this.kube.coordination.createNamespacedLease({
          namespace,
          body: { metadata: { name, namespace }, spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 } },
        });
        this.lastRenew = now.getTime();
        return true;
      } catch (err) {
        if (statusCode(err) === 409) return false;
        throw err;
      }
    }
    const holder = lease.spec?.holderIdentity;
    const renewed = lease.spec?.renewTime ? new Date(lease.spec.renewTime).getTime() : 0;
    const expired = renewed + (lease.spec?.leaseDurationSeconds ?? this.duration) * 1000 < now.getTime();
    if (holder && holder !== identity && !expired) return false;
    const transitions = (lease.spec?.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
    try {
      await this.kube.coordination.replaceNamespacedLease({
        name,
        namespace,
        body: {
          metadata: { name, namespace, resourceVersion: lease.metadata?.resourceVersion },
          spec: { ...spec, acquireTime: holder === identity ? lease.spec?.acquireTime : microTime(now), leaseTransitions: transitions },
        },
      });
      this.lastRenew = now.getTime();
      return true;
    } catch (err) {
      if (statusCode(err) === 409) return false;
      throw err;
    }
  }

  /** Gives the lease up so a successor need not wait for it to expire. */
  async release(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.kube.coordination.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace });
      if (lease.spec?.holderIdentity !== this.opts.identity) return;
      await this.kube.coordination.replaceNamespacedLease({
        name: this.opts.name,
        namespace: this.opts.namespace,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: undefined, renewTime: microTime(new Date(0)) } },
      });
    } catch {
      // it expires by itself
    }
  }
}
