// What the dispatcher remembers about the objects of its node between events, keyed by uid.
// Bounded: an entry lives while its object exists and matters (forget on deletion, and when the
// object is final with no job), so a long-running agent holds no more than its node's objects.
import type { Completion } from './completion.js';
import type { Held, Kind, Work } from './decide.js';

export interface Unwritten {
  kind: Kind;
  ref: { namespace: string; name: string };
  completion: Completion;
}

export class WorkMemory {
  /** uids claimed, recovered or cleaned up by this process: never run again. */
  private readonly handled = new Set<string>();
  /** uids with a deletion step in flight or done. */
  private readonly deletions = new Map<string, 'busy' | 'done'>();
  /** Final statuses that could not be written yet, retried on the next event or resync. */
  private readonly unwritten = new Map<string, Unwritten>();
  /** uid -> the resourceVersion already reported as not parsing (reported once per version). */
  private readonly invalid = new Map<string, string>();
  /** Assigned work not claimed yet, waiting for a slot. */
  readonly queue = new Map<string, Work>();

  held(uid: string, job?: Held['job']): Held {
    return { job, handled: this.handled.has(uid), deletion: this.deletions.get(uid), unwritten: this.unwritten.has(uid) };
  }

  markHandled(uid: string): void {
    this.handled.add(uid);
  }

  deletion(uid: string, state: 'busy' | 'done' | undefined): void {
    if (state) this.deletions.set(uid, state);
    else this.deletions.delete(uid);
  }

  keepUnwritten(uid: string, u: Unwritten): void {
    this.unwritten.set(uid, u);
  }

  /** The unwritten status, taken out of memory (put back if writing it fails again). */
  takeUnwritten(uid: string): Unwritten | undefined {
    const u = this.unwritten.get(uid);
    this.unwritten.delete(uid);
    return u;
  }

  hasUnwritten(uid: string): boolean {
    return this.unwritten.has(uid);
  }

  /** True the first time a version of the object is seen not to parse (log it then only). */
  firstInvalid(uid: string, resourceVersion: string): boolean {
    if (this.invalid.get(uid) === resourceVersion) return false;
    this.invalid.set(uid, resourceVersion);
    return true;
  }

  /** The object is final and nothing runs for it. */
  forgetSettled(uid: string): void {
    this.handled.delete(uid);
    this.invalid.delete(uid);
  }

  /** The object is gone: nothing about it is needed any more. */
  forget(uid: string): void {
    this.forgetSettled(uid);
    this.deletions.delete(uid);
    this.unwritten.delete(uid);
    this.queue.delete(uid);
  }

  /** Forgets every uid not in `live` (the objects that still exist, and those a job runs for). */
  retainOnly(live: ReadonlySet<string>): void {
    for (const uid of this.uids()) if (!live.has(uid)) this.forget(uid);
  }

  private uids(): Set<string> {
    return new Set([...this.handled, ...this.deletions.keys(), ...this.unwritten.keys(), ...this.invalid.keys(), ...this.queue.keys()]);
  }

  /** How many uids anything is remembered for (logs and tests). */
  size(): number {
    return this.uids().size;
  }
}
