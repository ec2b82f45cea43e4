// Waiting for a condition: one poller for every suite, the bench and the demo. A fixed sleep is
// for a deliberate pause only (letting time pass to show that nothing happens), never to wait.

export interface PollOptions {
  /** Default 60 s. */
  timeoutMs?: number;
  /** Default 200 ms. */
  intervalMs?: number;
}

/**
 * Calls `probe` until it returns a value other than undefined, null or false, and returns that
 * value. A thrown error ends the wait at once (a probe throws for "this can no longer happen").
 * On timeout the error names `what` and, when `describe` is given, the last state it reports.
 * `options` as a number is the timeout.
 */
export async function poll<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  options: number | (PollOptions & { describe?: () => string | Promise<string> }) = {},
): Promise<T> {
  const opts = typeof options === 'number' ? { timeoutMs: options } : options;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) {
      const last = opts.describe ? ` (last: ${await opts.describe()})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}`);
    }
    await sleep(opts.intervalMs ?? 200);
  }
}

/** A deliberate pause (not a wait for a condition: use poll for that). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
