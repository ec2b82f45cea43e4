// The command line a save records for a VM that may run lazily restored: its
// RAM mapping of an older snapshot becomes plain RAM again (see eagerArgv).
import fs from 'node:fs';
import { MAGIC } from '../../snapshot-file/header.js';
import { eagerArgv } from './plan.js';

/** A vmsnap snapshot, or a file already unlinked (a deleted snapshot still mapped by the VM). */
function isSnapshotOrGone(file: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
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
