// Milliseconds since this process started. process.uptime() counts from the
// real start also when Node runs from a start-up snapshot (bin/vmsnap-agent),
// where performance.now() counts from the moment the snapshot was built.
export function sinceProcessStartMs(): number {
  return process.uptime() * 1000;
}

const tracing = () => process.env.VMSNAP_TRACE === '1';

/**
 * With VMSNAP_TRACE=1: one stderr line per step of a restore, in ms since the
 * process started, and the wall clock (epoch ms, to line up with the agent's logs).
 */
export function traceStep(step: string): void {
  if (tracing()) process.stderr.write(`vmsnap-trace ${sinceProcessStartMs().toFixed(1)} ${step} @${Date.now()}\n`);
}
