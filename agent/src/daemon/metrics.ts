// The agent's Prometheus metrics, on /metrics of its health listener (VMSNAP_HEALTH_PORT):
// repository transfers (uploads after saves, fetches for restores on this node) and the RAM of
// lazily restored VMs that is resident so far.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type TransferDirection = 'upload' | 'download';

export class AgentMetrics {
  readonly registry = new Registry();
  readonly transferBytes = new Counter({
    name: 'vmsnap_repository_transfer_bytes_total',
    help: 'Snapshot data bytes (present pages) uploaded to or downloaded from repositories.',
    labelNames: ['direction'],
    registers: [this.registry],
  });
  readonly transferDuration = new Histogram({
    name: 'vmsnap_repository_transfer_duration_seconds',
    help: 'How long successful repository uploads and downloads took.',
    labelNames: ['direction'],
    buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  });
  readonly transferFailures = new Counter({
    name: 'vmsnap_repository_transfer_failures_total',
    help: 'Repository uploads and downloads that failed.',
    labelNames: ['direction'],
    registers: [this.registry],
  });
  readonly lazyResident = new Gauge({
    name: 'vmsnap_lazy_resident_bytes',
    help: 'RAM of each lazily restored VM on this node that is resident (paged in from its snapshot file).',
    labelNames: ['namespace', 'restore'],
    registers: [this.registry],
  });

  /** Times `run` as one transfer: its bytes and duration when it succeeds, a failure when it throws. */
  async transfer<T>(direction: TransferDirection, run: () => Promise<T>, bytesOf: (result: T) => number): Promise<T> {
    const started = process.hrtime.bigint();
    try {
      const result = await run();
      this.transferBytes.inc({ direction }, bytesOf(result));
      this.transferDuration.observe({ direction }, Number(process.hrtime.bigint() - started) / 1e9);
      return result;
    } catch (err) {
      this.transferFailures.inc({ direction });
      throw err;
    }
  }
}
