import { traceStep, tracedAtMs } from './clock.js';

describe('the step trace', () => {
  const saved = process.env.VMSNAP_TRACE;
  afterEach(() => {
    if (saved === undefined) delete process.env.VMSNAP_TRACE;
    else process.env.VMSNAP_TRACE = saved;
  });

  /** What traceStep wrote to stderr for these steps. */
  function traced(steps: string[]): string {
    let out = '';
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array) => ((out += String(chunk)), true)) as typeof process.stderr.write;
    try {
      for (const step of steps) traceStep(step);
    } finally {
      process.stderr.write = write;
    }
    return out;
  }

  it('reads back when each step was traced, by its exact name', () => {
    process.env.VMSNAP_TRACE = '1';
    const before = process.uptime() * 1000;
    const err = 'some other line\n' + traced(['migrate issued', 'QMP migrate answered']);
    const at = tracedAtMs(err, 'migrate issued')!;
    expect(at).toBeGreaterThanOrEqual(before - 1);
    expect(at).toBeLessThanOrEqual(process.uptime() * 1000);
    expect(tracedAtMs(err, 'QMP migrate answered')).toBeGreaterThanOrEqual(at);
    expect(tracedAtMs(err, 'migrate')).toBeUndefined();
  });

  it('writes nothing unless VMSNAP_TRACE=1', () => {
    delete process.env.VMSNAP_TRACE;
    expect(traced(['migrate issued'])).toBe('');
  });
});
