import { z } from 'zod';
import {
  DNS1123_LABEL_MAX,
  dns1123Label,
  dns1123Subdomain,
  formatZodError,
  goDuration,
  parseDurationMs,
} from './common.js';

describe('parseDurationMs', () => {
  it.each([
    ['90s', 90_000],
    ['10m', 600_000],
    ['1h30m', 5_400_000],
    ['1.5h', 5_400_000],
    ['250ms', 250],
    ['2m30s500ms', 150_500],
    ['1500us', 1.5],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDurationMs(text)).toBeCloseTo(ms, 6);
  });

  it.each(['', '10', 'm', '-5s', '10 m', '1d', '5min', 'PT10M', '1.s'])('refuses %j', (text) => {
    expect(() => parseDurationMs(text)).toThrow(/invalid duration/);
  });
});

describe('goDuration schema', () => {
  const schema = goDuration('failureDeadline', { min: '1s', max: '1h' });

  it('accepts durations in range', () => {
    expect(schema.parse('30m')).toBe('30m');
  });

  it('refuses durations out of range and malformed ones, naming the field', () => {
    for (const bad of ['500ms', '2h', 'soon']) {
      const result = schema.safeParse(bad);
      expect(result.success).toBe(false);
      expect(result.error!.issues[0]!.message).toContain('failureDeadline');
    }
  });
});

describe('DNS-1123 names', () => {
  it('accepts labels and refuses what Kubernetes refuses', () => {
    const label = dns1123Label('vmName');
    expect(label.parse('demo-1')).toBe('demo-1');
    for (const bad of ['Demo', '-demo', 'demo-', 'de_mo', 'a.b', '', 'a'.repeat(DNS1123_LABEL_MAX + 1)]) {
      expect(label.safeParse(bad).success).toBe(false);
    }
  });

  it('accepts subdomains with dots', () => {
    const sub = dns1123Subdomain('snapshotName');
    expect(sub.parse('nightly.demo-1')).toBe('nightly.demo-1');
    expect(sub.safeParse('nightly..demo').success).toBe(false);
    expect(sub.safeParse('a'.repeat(254)).success).toBe(false);
  });
});

describe('formatZodError', () => {
  it('names the path of every issue', () => {
    const schema = z.object({ spec: z.object({ items: z.array(z.object({ n: z.number().max(3) })) }) });
    const result = schema.safeParse({ spec: { items: [{ n: 1 }, { n: 9 }] } });
    expect(formatZodError(result.error!)).toMatch(/^spec\.items\[1\]\.n: /);
  });
});
