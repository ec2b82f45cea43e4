import { AgentMetrics } from './metrics.js';

const value = async (m: AgentMetrics, name: string, labels: Record<string, string>) =>
  (await m.registry.getSingleMetric(name)!.get()).values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;

describe('AgentMetrics.transfer', () => {
  it('counts the bytes and duration of a transfer that succeeds, and a failure of one that throws', async () => {
    const m = new AgentMetrics();
    await expect(m.transfer('upload', async () => ({ dataBytes: 1234 }), (r) => r.dataBytes)).resolves.toEqual({ dataBytes: 1234 });
    await expect(m.transfer('download', async () => Promise.reject(new Error('refused')), () => 0)).rejects.toThrow('refused');
    expect(await value(m, 'vmsnap_repository_transfer_bytes_total', { direction: 'upload' })).toBe(1234);
    expect(await value(m, 'vmsnap_repository_transfer_duration_seconds', { direction: 'upload', le: '+Inf' })).toBe(1);
    expect(await value(m, 'vmsnap_repository_transfer_failures_total', { direction: 'download' })).toBe(1);
    expect(await value(m, 'vmsnap_repository_transfer_bytes_total', { direction: 'download' })).toBeUndefined();
  });
});
