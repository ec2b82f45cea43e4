import { serveHealth } from '../kube/health.js';
import { operatorReadiness } from './readiness.js';
import { operatorSettings } from './settings.js';

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

describe('operator settings', () => {
  it('reads what the chart renders', () => {
    const s = operatorSettings({
      VMSNAP_LOG_LEVEL: 'debug',
      VMSNAP_METRICS_PORT: 'off',
      VMSNAP_HEALTH_PORT: '8081',
      VMSNAP_HEALTH_HOST: '10.1.2.3',
      VMSNAP_LEASE_NAME: 'my-lease',
      VMSNAP_LEASE_NAMESPACE: 'sys',
      VMSNAP_LEASE_DURATION_SECONDS: '20',
      VMSNAP_LEASE_RENEW_DEADLINE_SECONDS: '12',
      VMSNAP_LEASE_RETRY_PERIOD_SECONDS: '3',
      VMSNAP_NODE_LOSS_GRACE_SECONDS: '30',
      POD_NAME: 'op-0',
      POD_NAMESPACE: 'sys',
    });
    expect(s).toEqual({
      logLevel: 'debug',
      metricsPort: undefined,
      metricsHost: '0.0.0.0',
      healthPort: 8081,
      healthHost: '10.1.2.3',
      namespace: 'sys',
      nodeLossGraceSeconds: 30,
      leaderElection: { namespace: 'sys', name: 'my-lease', identity: 'op-0', leaseDurationSeconds: 20, renewDeadlineSeconds: 12, retryPeriodSeconds: 3 },
    });
  });

  it('keeps the test stack names, and refuses a bad number naming the variable', () => {
    const s = operatorSettings({ METRICS_PORT: '0', METRICS_HOST: '127.0.0.1', LEADER_ELECTION: 'false', POD_NAMESPACE: 'x' });
    expect(s).toMatchObject({ metricsPort: 0, metricsHost: '127.0.0.1', healthPort: undefined, leaderElection: undefined });
    expect(operatorSettings({}).metricsPort).toBe(8080);
    expect(operatorSettings({}).nodeLossGraceSeconds).toBe(600);
    expect(() => operatorSettings({ VMSNAP_NODE_LOSS_GRACE_SECONDS: '0' })).toThrow(/VMSNAP_NODE_LOSS_GRACE_SECONDS=0/);
    expect(() => operatorSettings({ VMSNAP_HEALTH_PORT: 'abc' })).toThrow(/VMSNAP_HEALTH_PORT=abc/);
    expect(() => operatorSettings({ VMSNAP_LEASE_DURATION_SECONDS: '0' })).toThrow(/VMSNAP_LEASE_DURATION_SECONDS/);
  });
});
