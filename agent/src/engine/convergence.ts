// How a live save is brought to its final pause, decided from what the QEMU offers (pure):
// - the pause: QEMU stops the guest once what is still dirty fits in `downtime-limit` at the
//   bandwidth it measures, so a low limit makes it copy longer while the guest runs and pause less;
// - finishing at all: a guest that dirties memory faster than the disk writes never gets there on
//   its own. dirty-limit (KVM's dirty ring) slows only the vCPUs that dirty memory fast, so it is
//   chosen where the accelerator has it; otherwise auto-converge throttles every vCPU in steps
//   until the copy catches up. QEMU refuses dirty-limit without a dirty ring, which QMP does not
//   show (the accelerator is no QOM object): that refusal is the last input (`dirtyLimitRefused`).
import type { Convergence } from '../../../api/common.js';
import type { LiveCaptureStatus } from '../../../api/vmsnapshot.js';

/** What QEMU asks to stay under for the final pause (ms); the pause QEMU reports also holds the device state. */
export const LIVE_DOWNTIME_LIMIT_MS = 10;

/**
 * auto-converge's steps: QEMU throttles when twice in a row the guest dirtied more than half of
 * what was written since the previous pass. Starting at 30% and adding 20% reaches its 99% cap in
 * five steps instead of QEMU's eight (20% + 10%): the copy's time stays bounded on slow disks.
 */
export const AUTO_CONVERGE_PARAMETERS = { 'cpu-throttle-initial': 30, 'cpu-throttle-increment': 20, 'max-cpu-throttle': 99 } as const;

/** dirty-limit's: each vCPU is held to 1 MB/s of dirtied memory, measured every 500 ms, once the copy is not converging. */
export const DIRTY_LIMIT_PARAMETERS = { 'vcpu-dirty-limit': 1, 'x-vcpu-dirty-limit-period': 500 } as const;

export interface QemuOffer {
  /** Migration capabilities the QEMU knows (query-migrate-capabilities). */
  capabilities: ReadonlySet<string>;
  /** Migration parameters the QEMU knows (query-migrate-parameters). */
  parameters: ReadonlySet<string>;
  /** query-kvm: KVM is the accelerator. */
  kvm: boolean;
  /** QEMU's answer when it refused the dirty-limit capability (KVM without a dirty ring). */
  dirtyLimitRefused?: string;
}

export interface LiveCapturePlan {
  convergence: Convergence;
  reason: string;
  downtimeLimitMs: number;
  /** Capability states to set (the method's on, the other off: QEMU refuses both at once). */
  capabilities: Record<string, boolean>;
  /** Parameters to set, only those the QEMU knows. */
  parameters: Record<string, number>;
}

export function planLiveCapture(offer: QemuOffer): LiveCapturePlan {
  const has = (c: string) => offer.capabilities.has(c);
  const known = (params: Record<string, number>) => Object.fromEntries(Object.entries(params).filter(([k]) => offer.parameters.has(k)));
  const off = (c: string) => (has(c) ? { [c]: false } : {});
  const base = { downtimeLimitMs: LIVE_DOWNTIME_LIMIT_MS };
  const downtime = known({ 'downtime-limit': LIVE_DOWNTIME_LIMIT_MS });

  if (has('dirty-limit') && offer.kvm && offer.dirtyLimitRefused === undefined) {
    return {
      ...base,
      convergence: 'DirtyLimit',
      reason: 'KVM offers dirty-limit: only the vCPUs that dirty memory faster than the copy are slowed',
      capabilities: { 'dirty-limit': true, ...off('auto-converge') },
      parameters: { ...downtime, ...known(DIRTY_LIMIT_PARAMETERS) },
    };
  }
  const noDirtyLimit = !has('dirty-limit')
    ? 'this QEMU has no dirty-limit capability'
    : !offer.kvm
      ? 'the accelerator is not KVM, and dirty-limit needs KVM with a dirty ring'
      : `QEMU refused dirty-limit (${offer.dirtyLimitRefused}): KVM runs without a dirty ring (accelerator property dirty-ring-size)`;
  if (has('auto-converge')) {
    return {
      ...base,
      convergence: 'AutoConverge',
      reason: `${noDirtyLimit}; auto-converge throttles every vCPU in steps while the copy does not converge`,
      capabilities: { 'auto-converge': true, ...off('dirty-limit') },
      parameters: { ...downtime, ...known(AUTO_CONVERGE_PARAMETERS) },
    };
  }
  return {
    ...base,
    convergence: 'None',
    reason: `${noDirtyLimit}, nor auto-converge: a guest that dirties memory faster than the disk writes keeps the copy from finishing`,
    capabilities: off('dirty-limit'),
    parameters: downtime,
  };
}

/** What a finished live save reports (status.capture): the plan, QEMU's downtime, and how hard auto-converge had to throttle. */
export function liveCaptureOutcome(plan: LiveCapturePlan, cpuThrottlePeakPercent: number, qemuDowntimeMs: number | undefined): LiveCaptureStatus {
  return {
    convergence: plan.convergence,
    reason: plan.reason,
    downtimeLimitMs: plan.downtimeLimitMs,
    ...(qemuDowntimeMs !== undefined ? { qemuDowntimeMs: Math.max(0, Math.round(qemuDowntimeMs)) } : {}),
    ...(plan.convergence === 'AutoConverge' ? { cpuThrottlePeakPercent: Math.round(Math.min(100, Math.max(0, cpuThrottlePeakPercent))) } : {}),
  };
}

/**
 * A live save's pause: QEMU's `downtime` (stop to completed) and then the wait for our `cont`,
 * from completion (QEMU's total-time after the migrate command) to the moment `cont` was answered.
 */
export function livePauseMs(outcome: { downtime?: number; 'total-time'?: number }, migrateSentAt: number, resumedAt: number): number {
  const completedAt = migrateSentAt + (outcome['total-time'] ?? 0);
  return (outcome.downtime ?? 0) + Math.max(0, resumedAt - completedAt);
}
