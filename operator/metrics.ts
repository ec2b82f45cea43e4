// Prometheus metrics on /metrics (and /healthz, /readyz), observed from finished objects.
import http from 'node:http';
import { Phase, isTerminal } from '../api/index.js';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly registry = new Registry();
  private readonly counted = new Set<string>();
  readonly operations = new Counter({
    name: 'vmsnap_operations_total',
    help: 'Finished VMSnapshots and VMRestores by kind and phase.',
    labelNames: ['kind', 'phase', 'node'],
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'vmsnap_operation_duration_seconds',
    help: 'How long saves and restores took.',
    labelNames: ['kind'],
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: 'vmsnap_bytes_total',
    help: 'Guest RAM bytes saved or restored.',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly throughput = new Histogram({
    name: 'vmsnap_throughput_mib_per_second',
    help: 'Save and restore throughput.',
    labelNames: ['kind'],
    buckets: [50, 100, 250, 500, 1000, 1500, 2000, 3000, 5000],
    registers: [this.registry],
  });
  readonly paused = new Histogram({
    name: 'vmsnap_vm_paused_seconds',
    help: 'How long saves kept their VM paused.',
    labelNames: ['kind'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly reconciles = new Counter({
    name: 'vmsnap_reconciles_total',
    help: 'Reconciles by kind and result.',
    labelNames: ['kind', 'result'],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'vmsnap_operator_' });
  }

  /** Counts each finished object once (by uid). */
  observeFinished(
    kind: string,
    uid: string | undefined,
    status: { phase?: string; nodeName?: string; durationMs?: number; restoreSize?: number; throughputMiBps?: number; vmPausedMs?: number } | undefined,
  ): void {
    if (!uid || !status || !isTerminal(status.phase) || this.counted.has(uid)) return;
    this.counted.add(uid);
    this.operations.inc({ kind, phase: status.phase, node: status.nodeName ?? '' });
    if (status.phase !== Phase.Succeeded) return;
    if (status.durationMs !== undefined) this.duration.observe({ kind }, status.durationMs / 1000);
    if (status.restoreSize) this.bytes.inc({ kind }, status.restoreSize);
    if (status.throughputMiBps) this.throughput.observe({ kind }, status.throughputMiBps);
    if (status.vmPausedMs !== undefined) this.paused.observe({ kind }, status.vmPausedMs / 1000);
  }

  /** Serves /metrics, /healthz and /readyz (from `ready`); port 0 picks a free one. Resolves with the bound port. */
  serve(port: number, host = '0.0.0.0', ready: () => string | undefined = () => undefined): Promise<{ port: number; close: () => Promise<void> }> {
    const server = http.createServer(async (req, res) => {
      if (req.url === '/metrics') {
        res.setHeader('Content-Type', this.registry.contentType);
        res.end(await this.registry.metrics());
      } else if (req.url === '/healthz') {
        res.end('ok');
      } else if (req.url === '/readyz') {
        const reason = ready();
        res.statusCode = reason === undefined ? 200 : 503;
        res.end(reason ?? 'ok');
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
    return new Promise((resolve) => {
      server.listen(port, host, () => {
        const addr = server.address();
        resolve({ port: typeof addr === 'object' && addr ? addr.port : port, close: () => new Promise((r) => server.close(() => r())) });
      });
    });
  }
}
