// Which waiting saves and restores take the node's free slots. Namespaces are tenants: one of them
// never holds more than `perNamespace` slots (less than all of them), so a namespace whose work
// hangs cannot keep another namespace's work waiting; a freed slot goes to the waiting namespace
// that runs the fewest operations, then to the one served least recently (round-robin among
// equals), and within a namespace to its oldest work. Pure: the dispatcher (work.ts) applies it.

export interface QueuedWork {
  id: string;
  namespace: string;
  /** Ordering within a namespace: the object's creationTimestamp (ISO), then id. */
  since: string;
}

export interface SlotState {
  total: number;
  perNamespace: number;
  /** Namespaces of the operations running now (one entry per operation). */
  running: readonly string[];
  /** namespace -> when it last got a slot (a counter); absent: never. */
  lastServed: ReadonlyMap<string, number>;
}

/** The work to start now, in order (at most the free slots). */
export function pickWork(queued: readonly QueuedWork[], slots: SlotState): QueuedWork[] {
  const held = new Map<string, number>();
  for (const ns of slots.running) held.set(ns, (held.get(ns) ?? 0) + 1);
  const waiting = new Map<string, QueuedWork[]>();
  for (const w of queued) waiting.set(w.namespace, [...(waiting.get(w.namespace) ?? []), w]);
  for (const list of waiting.values()) list.sort((a, b) => (a.since < b.since ? -1 : a.since > b.since ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const served = new Map(slots.lastServed);
  let tick = Math.max(0, ...served.values());
  let free = slots.total - slots.running.length;
  const picked: QueuedWork[] = [];
  while (free > 0) {
    let best: string | undefined;
    for (const [ns, list] of waiting) {
      if (list.length === 0 || (held.get(ns) ?? 0) >= slots.perNamespace) continue;
      if (best === undefined || before(ns, best, held, served)) best = ns;
    }
    if (best === undefined) break;
    picked.push(waiting.get(best)!.shift()!);
    held.set(best, (held.get(best) ?? 0) + 1);
    served.set(best, ++tick);
    free--;
  }
  return picked;
}

/** Fewer slots held first, then served longer ago (never served first), then by name. */
function before(a: string, b: string, held: Map<string, number>, served: Map<string, number>): boolean {
  const ha = held.get(a) ?? 0;
  const hb = held.get(b) ?? 0;
  if (ha !== hb) return ha < hb;
  const sa = served.get(a) ?? -1;
  const sb = served.get(b) ?? -1;
  if (sa !== sb) return sa < sb;
  return a < b;
}
