// The fault-injection plan: a seeded PRNG picks, for every run, the operation,
// the process to kill -9 and the moment. The same seed gives the same plan, so a
// failing run is replayed with VMSNAP_CHAOS_SEED=<seed>.
export const OPS = ['save-paused-resume', 'save-live-resume', 'save-paused-stop', 'restore'] as const;
export const VICTIMS = ['agent', 'operator', 'qemu', 'apiserver', 'etcd'] as const;

export type Op = (typeof OPS)[number];
export type Victim = (typeof VICTIMS)[number];
export type Moment =
  /** A fixed time after the object is applied (scheduling, claim, save, status write: whatever runs then). */
  | { kind: 'delay'; ms: number }
  /** Once the object is seen InProgress, plus a little. */
  | { kind: 'inProgress'; extraMs: number }
  /** While QEMU migrates: a save past `percent` of its RAM, a restore's incoming load. */
  | { kind: 'migrating'; percent: number };

export interface Run {
  index: number;
  op: Op;
  victim: Victim;
  moment: Moment;
  /** How long the victim stays dead before it is started again. */
  downMs: number;
}

/** mulberry32: small, fast, and good enough to spread faults. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every victim gets an equal share of the runs (shuffled); operation and moment are drawn per run. */
export function planRuns(seed: number, count: number): Run[] {
  const rand = prng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const victims: Victim[] = Array.from({ length: count }, (_, i) => VICTIMS[i % VICTIMS.length]!);
  for (let i = victims.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [victims[i], victims[j]] = [victims[j]!, victims[i]!];
  }
  return victims.map((victim, index) => {
    const kind = pick(['delay', 'inProgress', 'migrating'] as const);
    const moment: Moment =
      kind === 'delay' ? { kind, ms: int(0, 1500) } : kind === 'inProgress' ? { kind, extraMs: int(0, 400) } : { kind, percent: int(0, 90) };
    return { index, op: pick(OPS), victim, moment, downMs: int(0, 2000) };
  });
}

export function describeRun(r: Run): string {
  const m = r.moment;
  const when = m.kind === 'delay' ? `${m.ms} ms after apply` : m.kind === 'inProgress' ? `InProgress + ${m.extraMs} ms` : `migrating >= ${m.percent}%`;
  return `run ${String(r.index + 1).padStart(2, '0')}: ${r.op}, kill -9 ${r.victim} at ${when}, down ${r.downMs} ms`;
}
