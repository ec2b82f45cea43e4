// The agent's own record of the disk overlays it created (a freeze's, a
// restore's): the only files it ever deletes. A path a QEMU reports (query-block)
// is a claim by the tenant; an overlay is deleted only when it is in the ledger
// and the name still leads, without a symlink anywhere, to the very file
// recorded (same device and inode), so a swapped-in link or file is left alone.
//
// The daemon's ledger is a JSON-lines file in its private directory under the
// storage root (appended, replayed on open); the CLI's lives in memory and
// knows only what this process created.
import fs from 'node:fs';
import path from 'node:path';
import { agentPrivateDir, kindOf, openRegular } from './private-files.js';

export const LEDGER_FILE = 'overlays.jsonl';

interface LedgerLine {
  /** Absolute path the agent created the overlay at. */
  path: string;
  /** Device and inode (decimal strings: inodes can exceed 2^53). Absent on a line that retires the entry. */
  dev?: string;
  ino?: string;
  at: string;
  /** Why it exists ('freeze', 'restore') or why it left the ledger ('deleted', 'gone'). */
  note: string;
}

export type LedgerRemoval =
  | { removed: true }
  | { removed: false; why: string };

export class OverlayLedger {
  private readonly entries = new Map<string, { dev: string; ino: string }>();

  private constructor(private readonly file: string | undefined) {
    if (file) this.replay(file);
  }

  /** The daemon's ledger under its storage root. */
  static forStorageRoot(storageRoot: string): OverlayLedger {
    return new OverlayLedger(path.join(agentPrivateDir(storageRoot), LEDGER_FILE));
  }

  /** The CLI's: what this process created, nothing more. */
  static inMemory(): OverlayLedger {
    return new OverlayLedger(undefined);
  }

  /**
   * Records the overlay at `file` (absolute), which the agent just created or
   * had QEMU create at a name it chose. Refused (returns the reason) when the
   * name is not a plain file: then it is never deleted by the agent.
   */
  record(file: string, note: string, fd?: number): string | undefined {
    let st: fs.BigIntStats;
    try {
      st = fd !== undefined ? fs.fstatSync(fd, { bigint: true }) : fs.lstatSync(file, { bigint: true });
    } catch (err) {
      return `${file} cannot be looked at: ${(err as Error).message}`;
    }
    if (!st.isFile()) return `${file} is not a regular file`;
    const dev = st.dev.toString();
    const ino = st.ino.toString();
    this.append({ path: path.resolve(file), dev, ino, at: new Date().toISOString(), note });
    this.entries.set(path.resolve(file), { dev, ino });
    return undefined;
  }

  /** Why the agent may not delete `file`, or undefined when it is its own overlay, unchanged. */
  whyNotOwned(file: string): string | undefined {
    const abs = path.resolve(file);
    const entry = this.entries.get(abs);
    if (!entry) return `${file} is not an overlay this agent created (not in its ledger)`;
    let st: fs.BigIntStats;
    try {
      // No symlink in the directories either: the name must lead where it led when recorded.
      if (fs.realpathSync(path.dirname(abs)) !== path.dirname(abs)) return `the directory of ${file} is reached through a symlink`;
      st = fs.lstatSync(abs, { bigint: true });
    } catch (err) {
      return `${file} cannot be looked at: ${(err as Error).message}`;
    }
    if (!st.isFile()) return `${file} is now ${kindOf(st as unknown as fs.Stats)}, not the overlay the agent created`;
    if (st.dev.toString() !== entry.dev || st.ino.toString() !== entry.ino) return `${file} is no longer the file the agent created (another file was put in its place)`;
    return undefined;
  }

  owns(file: string): boolean {
    return this.whyNotOwned(file) === undefined;
  }

  /** Deletes `file` only if it is the agent's own overlay, unchanged (see whyNotOwned). */
  remove(file: string): LedgerRemoval {
    const abs = path.resolve(file);
    if (this.entries.has(abs) && !fs.existsSync(abs)) {
      this.forget(abs, 'gone');
      return { removed: false, why: `${file} is already gone` };
    }
    const why = this.whyNotOwned(abs);
    if (why) return { removed: false, why };
    fs.unlinkSync(abs);
    this.forget(abs, 'deleted');
    return { removed: true };
  }

  private forget(abs: string, note: string): void {
    this.entries.delete(abs);
    this.append({ path: abs, at: new Date().toISOString(), note });
  }

  private append(line: LedgerLine): void {
    if (!this.file) return;
    const { O_WRONLY, O_APPEND, O_CREAT } = fs.constants;
    const fd = openRegular(this.file, O_WRONLY | O_APPEND | O_CREAT, 0o600)!;
    try {
      fs.writeSync(fd, JSON.stringify(line) + '\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  private replay(file: string): void {
    const fd = openRegular(file, fs.constants.O_RDONLY);
    if (fd === undefined) return;
    let text: string;
    try {
      text = fs.readFileSync(fd, 'utf8');
    } finally {
      fs.closeSync(fd);
    }
    for (const raw of text.split('\n')) {
      if (!raw) continue;
      let line: LedgerLine;
      try {
        line = JSON.parse(raw) as LedgerLine;
      } catch {
        continue; // a line cut short by a crash: only the last one can be
      }
      if (line.dev !== undefined && line.ino !== undefined) this.entries.set(line.path, { dev: line.dev, ino: line.ino });
      else this.entries.delete(line.path);
    }
  }
}
