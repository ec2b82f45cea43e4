import { serveHealth } from '../kube/health.js';
import { operatorReadiness } from './readiness.js';

describe('operator readiness', () => {
  const t0 = 1_000_000;
  const inputs = (over: { synced?: boolean; leader?: boolean; answered?: number; elector?: boolean } = {}) => ({
    controller: { synced: over.synced ?? false },
    elector: over.elector === false ? undefined : { isLeader: over.leader ?? false, lastApiAnswer: over.answered ?? 0 },
    now: () => t0,
    apiAnswerMaxAgeMs: 30_000,
  });

  it('is not ready before the API server answered a lease request', () => {
    expect(operatorReadiness(inputs())()).toMatch(/has not answered a leader lease request yet/);
  });

  it('a standby is ready while the API server answers; unready once it stops answering', () => {
    expect(operatorReadiness(inputs({ answered: t0 - 1_000 }))()).toBeUndefined();
    expect(operatorReadiness(inputs({ answered: t0 - 31_000 }))()).toMatch(/for 31 s/);
  });

  it('the leader is ready only once its caches synced', () => {
    expect(operatorReadiness(inputs({ answered: t0, leader: true }))()).toMatch(/caches to sync/);
    expect(operatorReadiness(inputs({ answered: t0, leader: true, synced: true }))()).toBeUndefined();
    expect(operatorReadiness(inputs({ answered: t0 - 60_000, leader: true, synced: true }))()).toMatch(/has not answered/);
  });

  it('without leader election, ready once synced', () => {
    expect(operatorReadiness(inputs({ elector: false }))()).toMatch(/caches/);
    expect(operatorReadiness(inputs({ elector: false, synced: true }))()).toBeUndefined();
  });

  it('serves the reasons over HTTP: 200 ok, 503 with the reason', async () => {
    let reason: string | undefined = 'not yet';
    const server = await serveHealth({ port: 0, host: '127.0.0.1', live: () => undefined, ready: () => reason });
    try {
      const get = async (p: string) => {
        const r = await fetch(`http://127.0.0.1:${server.port}${p}`);
        return [r.status, (await r.text()).trim()] as const;
      };
      expect(await get('/healthz')).toEqual([200, 'ok']);
      expect(await get('/readyz')).toEqual([503, 'not yet']);
      reason = undefined;
      expect(await get('/readyz')).toEqual([200, 'ok']);
      expect((await get('/nope'))[0]).toBe(404);
    } finally {
      await server.close();
    }
  });
});
