import { pino } from 'pino';
import { AgentHealth, startAgentHealth } from './health.js';

describe('agent health', () => {
  it('is ready only after the watches synced and while inventory publishes are recent', () => {
    let now = 1_000_000;
    const h = new AgentHealth(100_000, () => now);
    expect(h.live()).toBeUndefined();
    expect(h.ready()).toMatch(/syncing the VMSnapshot and VMRestore watches/);
    h.watchesSynced();
    expect(h.ready()).toMatch(/not been published yet/);
    h.inventoryPublished();
    expect(h.ready()).toBeUndefined();
    now += 100_001;
    expect(h.ready()).toMatch(/last published 100 s ago/);
    h.inventoryPublished();
    expect(h.ready()).toBeUndefined();
    h.stopped();
    expect(h.ready()).toBe('stopping');
  });

  it('serves /healthz and /readyz on VMSNAP_HEALTH_PORT, and nothing without it', async () => {
    const log = pino({ level: 'silent' });
    const none = await startAgentHealth({ env: {}, log, inventoryIntervalSeconds: 30 });
    expect(none.port).toBeUndefined();
    await none.close();

    const served = await startAgentHealth({ env: { VMSNAP_HEALTH_PORT: '0', VMSNAP_HEALTH_HOST: '127.0.0.1' }, log, inventoryIntervalSeconds: 30 });
    expect(served.health.publishMaxAgeMs).toBe(100_000);
    const port = served.port!;
    try {
      const get = async (p: string) => {
        const r = await fetch(`http://127.0.0.1:${port}${p}`);
        return [r.status, (await r.text()).trim()] as const;
      };
      expect(await get('/healthz')).toEqual([200, 'ok']);
      expect((await get('/readyz'))[0]).toBe(503);
      served.health.watchesSynced();
      served.health.inventoryPublished();
      expect(await get('/readyz')).toEqual([200, 'ok']);
    } finally {
      await served.close();
    }
  });
});
