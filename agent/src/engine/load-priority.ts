// While QEMU loads a mapped-ram snapshot, its main thread hands the pages to
// the multifd channels in multifd_recv(), which spins over the channels until
// one is free (QEMU 9.1-10.x): in a perf profile of a 2 GiB restore here, 20%
// of the loading QEMU's samples were that loop, 70% the channels zeroing the
// guest RAM they fault in (clear_page). On a node with few cores the spin takes
// a core from the channels. So, for the load only, the agent lowers the
// priority of that one thread (nice 19): it spins on CPU nobody else wants,
// and still runs as soon as a channel blocks on the disk. The channel threads
// keep their priority (they are created by the main thread, so it is lowered
// only once they exist); everything is put back once the load has ended.
import fs from 'node:fs';
import os from 'node:os';

const CAP_SYS_NICE = 23;

/** Pure: whether a /proc/<pid>/status text lists `cap` among the effective capabilities. */
export function hasEffectiveCapability(status: string, cap: number): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m !== null && ((BigInt(`0x${m[1]}`) >> BigInt(cap)) & 1n) === 1n;
}

/**
 * Giving a thread its priority back (a lower nice value) takes CAP_SYS_NICE, even for a process of
 * one's own user, who may lower it without: without the capability QEMU would stay lowered for life.
 */
function mayRaisePriority(): boolean {
  try {
    return hasEffectiveCapability(fs.readFileSync('/proc/self/status', 'utf8'), CAP_SYS_NICE);
  } catch {
    return false;
  }
}

/** The main thread's nice value during the load. */
export const LOAD_MAIN_THREAD_NICE = 19;
const WAIT_FOR_CHANNELS_MS = 2_000;

/** The thread ids of a process (empty once it is gone). */
export function threadIds(pid: number): number[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).map(Number).filter((t) => t > 0);
  } catch {
    return [];
  }
}

/** Pure: whether `channels` threads appeared since `before` (QEMU starts one per multifd channel). */
export function channelThreadsStarted(before: readonly number[], now: readonly number[], channels: number): boolean {
  const old = new Set(before);
  return now.filter((t) => !old.has(t)).length >= channels;
}

export type LoadPriority = { demotedMs: number; nice: number } | { skipped: string };

export interface MainThreadDemotion {
  /** Puts the priorities back (idempotent) and says what was done. */
  end(): LoadPriority;
}

/**
 * Lowers the main thread of QEMU `pid` once its `channels` channel threads exist (threads that did not
 * exist in `before`). `alive` must say whether `pid` is still the same QEMU (a pidfd, not the pid):
 * a priority is changed only while it is.
 */
export function demoteMainThreadDuringLoad(pid: number, before: readonly number[], channels: number, alive: () => boolean): MainThreadDemotion {
  let state: { phase: 'waiting' } | { phase: 'demoted'; at: number; original: number; known: Set<number> } | { phase: 'ended'; result: LoadPriority } = { phase: 'waiting' };
  let timer: NodeJS.Timeout | undefined;
  let skipped = 'the channel threads did not start within the wait';
  const deadline = Date.now() + WAIT_FOR_CHANNELS_MS;
  const poll = () => {
    timer = undefined;
    if (state.phase !== 'waiting') return;
    const now = threadIds(pid);
    if (!channelThreadsStarted(before, now, channels)) {
      if (Date.now() < deadline && alive()) timer = setTimeout(poll, 2);
      return;
    }
    try {
      const original = os.getPriority(pid);
      if (original >= LOAD_MAIN_THREAD_NICE || !alive()) {
        skipped = `QEMU's main thread already runs at nice ${original}, or QEMU is gone`;
        return;
      }
      os.setPriority(pid, LOAD_MAIN_THREAD_NICE);
      state = { phase: 'demoted', at: Date.now(), original, known: new Set(now) };
      if (!alive()) end(); // gone meanwhile: whoever has its pid now gets its priority back
    } catch (err) {
      // The process is gone, or the kernel refuses (an agent without CAP_SYS_NICE): the load runs as it would have.
      skipped = `cannot change the priority of QEMU's main thread: ${(err as Error).message}`;
    }
  };
  const end = (): LoadPriority => {
    if (timer) clearTimeout(timer);
    if (state.phase === 'ended') return state.result;
    if (state.phase === 'waiting') {
      state = { phase: 'ended', result: { skipped } };
      return state.result;
    }
    const { at, original, known } = state;
    // Threads the main thread started while lowered inherited its priority: they get the original back too.
    for (const tid of [pid, ...threadIds(pid).filter((t) => !known.has(t))]) {
      try {
        if (alive() && os.getPriority(tid) === LOAD_MAIN_THREAD_NICE) os.setPriority(tid, original);
      } catch {
        // exited meanwhile
      }
    }
    state = { phase: 'ended', result: { demotedMs: Date.now() - at, nice: LOAD_MAIN_THREAD_NICE } };
    return state.result;
  };
  if (mayRaisePriority()) poll();
  else skipped = 'without CAP_SYS_NICE the priority of QEMU\'s main thread could not be put back after the load';
  return { end };
}
