// Whether to open the snapshot with O_DIRECT: probed, never assumed
// (tmpfs refuses O_DIRECT; some filesystems accept the open but fail writes).
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../native.js';
import type { DirectIOMode } from '../snapshot-file/metadata.js';
import { VmsnapError } from '../errors.js';

export interface DirectIODecision {
  enabled: boolean;
  /** Why direct I/O is off (recorded in the snapshot and printed), when it is. */
  reason?: string;
}

export class DirectIOUnsupportedError extends VmsnapError {
  override name = 'DirectIOUnsupportedError';
}

/** Saves probe the target directory with an aligned O_DIRECT write. */
function probeWrite(file: string): { where: string; failure: string | null } {
  const dir = path.dirname(path.resolve(file));
  return { where: `the filesystem of ${dir}`, failure: native().probeDirectIO(dir) };
}

/** Restores probe the snapshot itself with an O_DIRECT open. */
function probeRead(file: string): { where: string; failure: string | null } {
  try {
    fs.closeSync(fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT));
    return { where: file, failure: null };
  } catch (err) {
    return { where: file, failure: `open with O_DIRECT failed: ${(err as Error).message}` };
  }
}

export function decideDirectIO(mode: DirectIOMode, file: string, access: 'write' | 'read'): DirectIODecision {
  if (mode === 'off') return { enabled: false, reason: 'direct I/O was turned off' };
  const { where, failure } = access === 'write' ? probeWrite(file) : probeRead(file);
  if (failure === null) return { enabled: true };
  if (mode === 'on') {
    throw new DirectIOUnsupportedError(`direct I/O 'on': ${where} does not support O_DIRECT (${failure}); use direct I/O 'auto' or 'off'`);
  }
  return { enabled: false, reason: `${where} does not support O_DIRECT (${failure}); fell back to buffered I/O` };
}
