// The chart's Grafana dashboard queries only metrics the operator or the agent exports.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentMetrics } from '../agent/src/daemon/metrics.js';
import { OperatorMetrics } from './metrics.js';

const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../helm/vmsnap/dashboards/vmsnap.json');
const dashboard = JSON.parse(readFileSync(file, 'utf8')) as { uid: string; panels: Array<{ title: string; targets: Array<{ expr: string }> }> };

describe('the Grafana dashboard', () => {
  const metrics = [new OperatorMetrics().registry, new AgentMetrics().registry].flatMap((r) => r.getMetricsAsArray());
  const exported = new Set(metrics.map((m) => m.name));
  const histograms = new Set(metrics.filter((m) => String(m.type) === 'histogram').map((m) => m.name));
  const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));

  it.each(dashboard.panels.map((p) => [p.title, p] as const))('%s queries exported metrics', (_title, panel) => {
    expect(panel.targets.length).toBeGreaterThan(0);
    for (const { expr } of panel.targets) {
      const names = expr.match(/\bvmsnap_[a-z_]+/g) ?? [];
      expect(names.length).toBeGreaterThan(0);
      for (const name of names) {
        const base = name.replace(/_(bucket|sum|count)$/, '');
        expect([name, exported.has(base)]).toEqual([name, true]);
        if (base !== name) expect([name, histograms.has(base)]).toEqual([name, true]);
      }
    }
  });

  it('covers operations and their outcomes, throughput, durations and VM pauses', () => {
    const all = exprs.join('\n');
    for (const metric of ['vmsnap_operations_total', 'vmsnap_throughput_mib_per_second', 'vmsnap_operation_duration_seconds', 'vmsnap_vm_paused_seconds', 'vmsnap_bytes_total']) {
      expect(all).toContain(metric);
    }
    expect(all).toContain('phase="Failed"');
  });

  it("covers the agents' repository transfers by direction and lazy residency per restore", () => {
    for (const metric of ['vmsnap_repository_transfer_bytes_total', 'vmsnap_repository_transfer_failures_total', 'vmsnap_repository_transfer_duration_seconds_bucket']) {
      expect(exprs.filter((e) => e.includes(metric) && e.includes('by (direction'))).not.toHaveLength(0);
    }
    expect(exprs).toContain('sum by (namespace, restore) (vmsnap_lazy_resident_bytes)');
  });
});
