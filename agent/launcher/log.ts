// One JSON line per event on stderr, in pino's shape (level, time, msg) so the same tools read
// the launcher's and the agent's logs; written synchronously so the last lines before an exit
// are not lost. QEMU's own output shares the container's stdout/stderr.
import { writeSync } from 'node:fs';

export type LogFields = Record<string, unknown>;
export type Log = (level: 'info' | 'warn' | 'error', msg: string, fields?: LogFields) => void;

const LEVELS = { info: 30, warn: 40, error: 50 } as const;

export const log: Log = (level, msg, fields = {}) => {
  const line = JSON.stringify({ level: LEVELS[level], time: Date.now(), name: 'vmsnap-launcher', msg, ...fields });
  try {
    writeSync(2, line + '\n');
  } catch {
    // stderr gone (closed pipe): logging must never take the launcher down.
  }
};
