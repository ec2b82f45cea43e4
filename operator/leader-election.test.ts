import type { Kube } from '../kube/client.js';
import { LeaderElector } from './leader-election.js';

it('a candidate keeps trying while the API server is unreachable, then leads', async () => {
  const calls: string[] = [];
  let reads = 0;
  const kube = {
    coordination: {
      readNamespacedLease: async () => {
        calls.push('read');
        if (++reads <= 2) throw new Error('request failed, reason: socket hang up'); // no HTTP status: a restart
        throw Object.assign(new Error('not found'), { code: 404 });
      },
      createNamespacedLease: async () => {
        calls.push('create');
        return {};
      },
    },
  } as unknown as Kube;
  const logs: string[] = [];
  const elector = new LeaderElector(kube, { namespace: 'ns', name: 'lease', identity: 'me', renewEveryMs: 5, log: (m) => logs.push(m) });
  await elector.acquire(() => undefined);
  await elector.release();
  expect(calls.slice(0, 4)).toEqual(['read', 'read', 'read', 'create']);
  expect(logs.filter((m) => m.includes('socket hang up'))).toHaveLength(2);
  expect(logs).toContain('became leader (lease ns/lease)');
});
