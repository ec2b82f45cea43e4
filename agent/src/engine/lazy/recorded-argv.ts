// The command line a save records for a VM that may run lazily restored: its
// RAM mapping of an older snapshot becomes plain RAM again (see eagerArgv).
import fs from 'node:fs';
import { MAGIC } from '../../snapshot-file/header.js';
import { openRegular } from '../private-files.js';
import { eagerArgv } from './plan.js';

/**
 * A vmsnap snapshot, or a file already unlinked (a deleted snapshot still
 * mapped by the VM). `file` is a mem-path from the tenant's command line: a
 * FIFO there would block the agent's event loop on open, and a device must not
 * be opened at all, so only a regular file reached without a symlink is read.
 */
export function isSnapshotOrGone(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = openRegular(file, fs.constants.O_RDONLY);
  } catch {
    return false;
  }
  if (fd === undefined) return true;
  try {
    const buf = Buffer.alloc(MAGIC.length);
    fs.readSync(fd, buf, 0, buf.length, 0);
    return buf.equals(MAGIC);
  } finally {
    fs.closeSync(fd);
  }
}

export function recordableArgv(argv: string[]): string[] {
  return eagerArgv(argv, isSnapshotOrGone);
}
