// Progress patches at most N a second per object: the newest value wins, the
// first is sent at once, and one patch is in flight at a time.

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export class Throttle<T> {
  private readonly intervalMs: number;
  private latest: { value: T } | undefined;
  private lastSent: { value: T; at: number } | undefined;
  private timer: unknown;
  private inFlight: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly send: (value: T) => Promise<void>,
    perSecond: number,
    private readonly opts: { clock?: Clock; equal?: (a: T, b: T) => boolean; onError?: (err: unknown) => void } = {},
  ) {
    if (!(perSecond > 0)) throw new Error('perSecond must be positive');
    this.intervalMs = 1000 / perSecond;
  }

  private get clock(): Clock {
    return this.opts.clock ?? realClock;
  }

  push(value: T): void {
    if (this.stopped) return;
    if (this.lastSent && this.opts.equal?.(this.lastSent.value, value)) {
      this.latest = undefined;
      return;
    }
    this.latest = { value };
    this.pump();
  }

  private pump(): void {
    if (this.stopped || !this.latest || this.inFlight || this.timer !== undefined) return;
    const wait = this.lastSent ? this.lastSent.at + this.intervalMs - this.clock.now() : 0;
    if (wait > 0) {
      this.timer = this.clock.setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, wait);
      return;
    }
    const { value } = this.latest;
    this.latest = undefined;
    this.lastSent = { value, at: this.clock.now() };
    this.inFlight = this.send(value)
      .catch((err: unknown) => this.opts.onError?.(err))
      .finally(() => {
        this.inFlight = undefined;
        this.pump();
      });
  }

  /** Drops what is not sent yet and waits for the patch in flight (so a final status lands after it). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.latest = undefined;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await this.inFlight;
  }
}
