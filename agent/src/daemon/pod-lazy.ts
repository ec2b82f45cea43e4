// What a lazy restore of a VM pod needs of the snapshot file. The pod's QEMU maps the file
// through an fd the agent opened (mem-path=/proc/self/fd/N), and QEMU's reopen of that magic
// link checks the file's own mode against the pod's uid: the file must be readable by others
// (0644). What keeps it from the pod's reach by path is a directory above it (the namespace's,
// created 0700, or the storage root) owned by the agent, closed to others and mounted by no pod.
// So the file is opened, and made 0644, only below such a directory.
import fs from 'node:fs';
import path from 'node:path';
import { openRegular } from '../engine/index.js';

/**
 * Undefined when a directory between `file` and `root` (both included) is the agent's and closed
 * to others (no group or other bits), so that nobody else reaches `file` by path; else why not.
 */
export function closedDirectoryAbove(root: string, file: string): string | undefined {
  const top = path.resolve(root);
  const rel = path.relative(top, path.resolve(file));
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return `${file} is not under the storage root ${top}`;
  const uid = process.geteuid!();
  for (let dir = path.dirname(path.resolve(file)); ; dir = path.dirname(dir)) {
    try {
      const st = fs.lstatSync(dir);
      if (st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0) return undefined;
    } catch {
      /* try the next one up */
    }
    if (dir === top || dir === path.dirname(dir)) break;
  }
  return (
    `no directory between ${file} and the storage root ${top} is the agent's (uid ${uid}) with mode 0700: ` +
    "a VM pod's QEMU maps the snapshot through a 0644 file, which only such a directory keeps from others"
  );
}

/** The mode the agent gives a snapshot file it saves: 0644 inside a closed directory (see above), else 0600. */
export function snapshotFileMode(root: string, file: string): number {
  return closedDirectoryAbove(root, file) === undefined ? 0o644 : 0o600;
}

/**
 * Opens the snapshot read-only for a VM pod's QEMU (the caller closes the fd), making it 0644
 * when it is not (saved before snapshots were), or says why a lazy restore cannot map it.
 */
export function openSnapshotForPod(root: string, file: string): { fd: number } | { reason: string } {
  const open = closedDirectoryAbove(root, file);
  if (open) return { reason: open };
  const fd = openRegular(file, fs.constants.O_RDONLY);
  if (fd === undefined) return { reason: `the snapshot ${file} is gone` };
  try {
    const st = fs.fstatSync(fd);
    if ((st.mode & 0o004) === 0) fs.fchmodSync(fd, 0o644);
    return { fd };
  } catch (err) {
    fs.closeSync(fd);
    return { reason: `the snapshot ${file} cannot be made readable for the pod's QEMU: ${(err as Error).message}` };
  }
}
