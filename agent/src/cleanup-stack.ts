// One operation's clean-ups (a file to remove, an fd to close, a QEMU to quit), registered as
// each step creates what needs undoing and run last first, so that a failure anywhere undoes
// exactly what exists. Node 20 has no AsyncDisposableStack; this is the part of it we use.
import fs from 'node:fs';
import { VmsnapError } from './errors.js';

export interface CleanupFailure {
  /** What the clean-up was for (as registered). */
  what: string;
  error: unknown;
}

/** A registered clean-up: run it now (the step's own success path) or keep what it guards (handed on). */
export interface Registered {
  /** Runs the clean-up at once and unregisters it; its error is the caller's. */
  now(): Promise<void>;
  /** Unregisters it without running it: what it would undo is kept. */
  keep(): void;
}

type Entry = { what: string; fn: () => unknown };

export class CleanupStack {
  private entries: Entry[] = [];

  /** Registers `fn`, to run when the stack unwinds, before everything registered earlier. */
  defer(what: string, fn: () => unknown): Registered {
    const entry: Entry = { what, fn };
    this.entries.push(entry);
    const take = () => {
      const i = this.entries.indexOf(entry);
      if (i < 0) return false;
      this.entries.splice(i, 1);
      return true;
    };
    return {
      now: async () => {
        if (take()) await entry.fn();
      },
      keep: () => void take(),
    };
  }

  /** Runs every clean-up still registered, last first; one that throws does not stop the others. */
  async unwind(): Promise<CleanupFailure[]> {
    const failures: CleanupFailure[] = [];
    for (let entry = this.entries.pop(); entry; entry = this.entries.pop()) {
      try {
        await entry.fn();
      } catch (error) {
        failures.push({ what: entry.what, error });
      }
    }
    return failures;
  }
}

/** Clean-ups that failed after the work itself had succeeded. */
export class CleanupError extends VmsnapError {
  override name = 'CleanupError';
  constructor(readonly failures: CleanupFailure[]) {
    super(`clean-up failed: ${describe(failures)}`);
  }
}

/**
 * Runs `body` over a fresh stack and unwinds it whatever happens (what the body kept stays).
 * A failed body's error is rethrown as it is (callers decide on its class and reason); what the
 * clean-up could not undo is added to its message, for people. Clean-ups that fail after a
 * successful body throw a CleanupError.
 */
export async function withCleanup<T>(body: (stack: CleanupStack) => Promise<T>): Promise<T> {
  const stack = new CleanupStack();
  let result: T;
  try {
    result = await body(stack);
  } catch (err) {
    const failures = await stack.unwind();
    if (failures.length > 0 && err instanceof Error) err.message += `; clean-up failed too: ${describe(failures)}`;
    throw err;
  }
  const failures = await stack.unwind();
  if (failures.length > 0) throw new CleanupError(failures);
  return result;
}

/** Closes and forgets every fd in `fds`: the clean-up of a list that grows as a step opens fds. */
export function closeFds(fds: number[]): void {
  for (const fd of fds.splice(0)) fs.closeSync(fd);
}

function describe(failures: CleanupFailure[]): string {
  return failures.map((f) => `${f.what} (${f.error instanceof Error ? f.error.message : String(f.error)})`).join('; ');
}
