import { AUTO_CONVERGE_PARAMETERS, DIRTY_LIMIT_PARAMETERS, LIVE_DOWNTIME_LIMIT_MS, liveCaptureOutcome, livePauseMs, planLiveCapture, type QemuOffer } from './convergence.js';

// What QEMU 10.0 lists (query-migrate-capabilities / query-migrate-parameters), abridged.
const CAPS = ['xbzrle', 'auto-converge', 'events', 'multifd', 'dirty-limit', 'mapped-ram'];
const PARAMS = ['downtime-limit', 'cpu-throttle-initial', 'cpu-throttle-increment', 'max-cpu-throttle', 'vcpu-dirty-limit', 'x-vcpu-dirty-limit-period', 'max-bandwidth'];

const offer = (o: Partial<{ caps: string[]; params: string[]; kvm: boolean; dirtyLimitRefused: string }> = {}): QemuOffer => ({
  capabilities: new Set(o.caps ?? CAPS),
  parameters: new Set(o.params ?? PARAMS),
  kvm: o.kvm ?? false,
  ...(o.dirtyLimitRefused !== undefined ? { dirtyLimitRefused: o.dirtyLimitRefused } : {}),
});

describe('planLiveCapture', () => {
  it('chooses dirty-limit on KVM, with auto-converge off (QEMU refuses both at once)', () => {
    const p = planLiveCapture(offer({ kvm: true }));
    expect(p.convergence).toBe('DirtyLimit');
    expect(p.capabilities).toEqual({ 'dirty-limit': true, 'auto-converge': false });
    expect(p.parameters).toEqual({ 'downtime-limit': LIVE_DOWNTIME_LIMIT_MS, ...DIRTY_LIMIT_PARAMETERS });
  });

  it('chooses auto-converge under TCG and says why dirty-limit was not used', () => {
    const p = planLiveCapture(offer({ kvm: false }));
    expect(p.convergence).toBe('AutoConverge');
    expect(p.capabilities).toEqual({ 'auto-converge': true, 'dirty-limit': false });
    expect(p.parameters).toEqual({ 'downtime-limit': LIVE_DOWNTIME_LIMIT_MS, ...AUTO_CONVERGE_PARAMETERS });
    expect(p.reason).toMatch(/not KVM/);
  });

  it('falls back to auto-converge when QEMU refused dirty-limit (KVM without a dirty ring), quoting QEMU', () => {
    const refusal = "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set";
    const p = planLiveCapture(offer({ kvm: true, dirtyLimitRefused: refusal }));
    expect(p.convergence).toBe('AutoConverge');
    expect(p.capabilities).toEqual({ 'auto-converge': true, 'dirty-limit': false });
    expect(p.reason).toContain(refusal);
  });

  it('uses auto-converge on a QEMU without dirty-limit, and never names a capability it does not know', () => {
    const p = planLiveCapture(offer({ kvm: true, caps: CAPS.filter((c) => c !== 'dirty-limit') }));
    expect(p.convergence).toBe('AutoConverge');
    expect(p.capabilities).toEqual({ 'auto-converge': true });
    expect(p.reason).toMatch(/no dirty-limit capability/);
  });

  it('sets only the parameters the QEMU knows', () => {
    const p = planLiveCapture(offer({ params: ['downtime-limit', 'cpu-throttle-initial'] }));
    expect(p.parameters).toEqual({ 'downtime-limit': LIVE_DOWNTIME_LIMIT_MS, 'cpu-throttle-initial': AUTO_CONVERGE_PARAMETERS['cpu-throttle-initial'] });
  });

  it('says None, and why, when the QEMU offers neither method', () => {
    const p = planLiveCapture(offer({ caps: ['multifd', 'mapped-ram'] }));
    expect(p.convergence).toBe('None');
    expect(p.capabilities).toEqual({});
    expect(p.parameters).toEqual({ 'downtime-limit': LIVE_DOWNTIME_LIMIT_MS });
    expect(p.reason).toMatch(/nor auto-converge/);
  });

  it('asks for a final pause well under the default 300 ms', () => {
    expect(planLiveCapture(offer()).downtimeLimitMs).toBeLessThan(20);
  });
});

describe('liveCaptureOutcome', () => {
  it('reports how hard auto-converge throttled, as a whole percentage', () => {
    expect(liveCaptureOutcome(planLiveCapture(offer()), 69.6, 7)).toEqual({
      convergence: 'AutoConverge',
      reason: expect.stringMatching(/auto-converge/),
      downtimeLimitMs: LIVE_DOWNTIME_LIMIT_MS,
      qemuDowntimeMs: 7,
      cpuThrottlePeakPercent: 70,
    });
    expect(liveCaptureOutcome(planLiveCapture(offer()), 0, undefined)).not.toHaveProperty('qemuDowntimeMs');
    expect(liveCaptureOutcome(planLiveCapture(offer()), 0, 3).cpuThrottlePeakPercent).toBe(0);
  });

  it('has no throttle figure for dirty-limit (it slows vCPUs another way)', () => {
    const out = liveCaptureOutcome(planLiveCapture(offer({ kvm: true })), 0, 5);
    expect(out.convergence).toBe('DirtyLimit');
    expect(out).not.toHaveProperty('cpuThrottlePeakPercent');
  });
});

describe('livePauseMs', () => {
  it("adds the wait for cont after QEMU's completion to QEMU's downtime", () => {
    expect(livePauseMs({ downtime: 8, 'total-time': 2000 }, 10_000, 12_003)).toBe(11);
  });
  it('never subtracts when cont came before our estimate of the completion', () => {
    expect(livePauseMs({ downtime: 8, 'total-time': 2000 }, 10_000, 11_990)).toBe(8);
    expect(livePauseMs({}, 0, 0)).toBe(0);
  });
});
