// QMP serves one client at a time: one holder per VM (namespace/name). Work
// waits for the inventory's short query; the inventory skips a busy VM.

export class VmLocks {
  private readonly held = new Map<string, { owner: string; released: Promise<void> }>();

  isHeld(key: string): boolean {
    return this.held.has(key);
  }

  owner(key: string): string | undefined {
    return this.held.get(key)?.owner;
  }

  /** Takes the lock if it is free; returns the release function, or undefined. */
  tryAcquire(key: string, owner: string): (() => void) | undefined {
    if (this.held.has(key)) return undefined;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    this.held.set(key, { owner, released });
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.held.delete(key);
      release();
    };
  }

  /** Waits for the lock (at most `timeoutMs`); undefined on timeout. */
  async acquire(key: string, owner: string, timeoutMs: number): Promise<(() => void) | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const release = this.tryAcquire(key, owner);
      if (release) return release;
      const current = this.held.get(key);
      const left = deadline - Date.now();
      if (!current || left <= 0) {
        if (left <= 0) return undefined;
        continue;
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([current.released, new Promise((r) => (timer = setTimeout(r, left)))]);
      clearTimeout(timer);
    }
  }
}

export const vmKey = (namespace: string, name: string): string => `${namespace}/${name}`;
