import { pino } from 'pino';
import { patchStatusWithRetry, type AgentContext } from './context.js';

/** A context whose status patches fail with `codes` in turn (undefined: success). */
function ctx(codes: Array<number | undefined>): { ctx: AgentContext; calls: () => number } {
  let calls = 0;
  const kube = {
    patchStatus: async () => {
      const code = codes[calls++];
      if (code !== undefined) throw Object.assign(new Error(`HTTP ${code}`), { code });
    },
  };
  return { ctx: { kube, log: pino({ level: 'silent' }) } as unknown as AgentContext, calls: () => calls };
}

const ref = { namespace: 'ns', name: 'snap' };

describe('patchStatusWithRetry', () => {
  it('takes a 422 as final: the object already finished (its terminal phase stands), so it is not retried', async () => {
    const c = ctx([422]);
    await expect(patchStatusWithRetry(c.ctx, 'vmSnapshot', ref, { phase: 'Succeeded' })).resolves.toBe('refused');
    expect(c.calls()).toBe(1);
  });

  it('retries other failures, and says gone for a deleted object', async () => {
    const flaky = ctx([503, undefined]);
    await expect(patchStatusWithRetry(flaky.ctx, 'vmSnapshot', ref, {})).resolves.toBe('ok');
    expect(flaky.calls()).toBe(2);
    await expect(patchStatusWithRetry(ctx([404]).ctx, 'vmSnapshot', ref, {})).resolves.toBe('gone');
  });
});
