// Milliseconds since this process started. process.uptime() counts from the
// real start also when Node runs from a start-up snapshot (bin/vmsnap-agent),
// where performance.now() counts from the moment the snapshot was built.
export function sinceProcessStartMs(): number {
  return process.uptime() * 1000;
}

const tracing = () => process.env.VMSNAP_TRACE === '1';

/**
 * With VMSNAP_TRACE=1: one stderr line per step of a save or restore, in ms since the
 * process started, and the wall clock (epoch ms, to line up with the agent's logs).
 */
export function traceStep(step: string): void {
  if (tracing()) process.stderr.write(`vmsnap-trace ${sinceProcessStartMs().toFixed(1)} ${step} @${Date.now()}\n`);
}

/** When a process traced `step` (its stderr under VMSNAP_TRACE=1), in ms since it started; undefined if it did not. */
export function tracedAtMs(stderr: string, step: string): number | undefined {
  for (const line of stderr.split('\n')) {
    const m = /^vmsnap-trace (\S+) (.*) @\d+$/.exec(line);
    if (m && m[2] === step) return Number(m[1]);
  }
  return undefined;
}
