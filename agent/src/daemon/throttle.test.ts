import { Throttle, type Clock } from './throttle.js';

class ManualClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 1;
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  };
  clearTimeout = (id: unknown) => {
    this.timers = this.timers.filter((t) => t.id !== id);
  };
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await flush();
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.t = due.at;
      due.fn();
    }
    this.t = end;
    await flush();
  }
}

const flush = () => new Promise((r) => setImmediate(r));

describe('Throttle', () => {
  it('sends the first value at once and then at most N a second, newest value wins', async () => {
    const clock = new ManualClock();
    const sent: Array<[number, number]> = [];
    const t = new Throttle<number>(async (v) => void sent.push([clock.t, v]), 2, { clock });
    t.push(1);
    await flush();
    for (let i = 2; i <= 10; i++) {
      clock.t += 50;
      t.push(i);
    }
    await clock.advance(2000);
    expect(sent).toEqual([
      [0, 1],
      [500, 10],
    ]);
    t.push(11);
    await clock.advance(10);
    expect(sent.at(-1)).toEqual([2450, 11]); // long after the last send: at once
  });

  it('never has two sends in flight and never exceeds the rate', async () => {
    const clock = new ManualClock();
    const sent: number[] = [];
    let resolveSend: () => void = () => undefined;
    let inFlight = 0;
    let maxInFlight = 0;
    const t = new Throttle<number>(
      () =>
        new Promise<void>((r) => {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          sent.push(clock.t);
          resolveSend = () => {
            inFlight--;
            r();
          };
        }),
      2,
      { clock },
    );
    for (let i = 0; i < 100; i++) {
      t.push(i);
      await clock.advance(20);
      if (i % 10 === 0) resolveSend();
    }
    resolveSend();
    await clock.advance(1000);
    expect(maxInFlight).toBe(1);
    for (let i = 1; i < sent.length; i++) expect(sent[i]! - sent[i - 1]!).toBeGreaterThanOrEqual(500);
  });

  it('skips values equal to the last sent and drops pending ones on stop', async () => {
    const clock = new ManualClock();
    const sent: number[] = [];
    const t = new Throttle<number>(async (v) => void sent.push(v), 2, { clock, equal: (a, b) => Math.floor(a) === Math.floor(b) });
    t.push(1);
    await flush();
    t.push(1.5);
    await clock.advance(1000);
    expect(sent).toEqual([1]);
    t.push(2);
    await flush();
    t.push(3);
    await t.stop();
    await clock.advance(1000);
    expect(sent).toEqual([1, 2]);
  });

  it('reports send errors and keeps going', async () => {
    const clock = new ManualClock();
    const errors: unknown[] = [];
    let calls = 0;
    const t = new Throttle<number>(
      async () => {
        calls++;
        throw new Error('boom');
      },
      2,
      { clock, onError: (e) => errors.push(e) },
    );
    t.push(1);
    await clock.advance(600);
    t.push(2);
    await clock.advance(600);
    expect(calls).toBe(2);
    expect(errors).toHaveLength(2);
  });
});
