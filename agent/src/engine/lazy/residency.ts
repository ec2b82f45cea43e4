// How much of a lazily restored VM's RAM is in memory, from the kernel's view
// of the QEMU process: the smaps entry of its mapping of the snapshot file.
import fs from 'node:fs';

export interface LazyResidency {
  /** Size of the mapping (the main RAM block). */
  mappedBytes: number;
  /** Pages of it in the VM's memory now: faulted in from the file or written by the guest. */
  residentBytes: number;
  /** Pages the guest wrote: private copies, no longer backed by the file. */
  privateBytes: number;
  /** Resident pages that other processes map too (other lazy copies of the same snapshot). */
  sharedBytes: number;
}

const KIB = 1024;

/**
 * Sums the /proc/<pid>/smaps entries that map `file` (a deleted file shows as
 * "<path> (deleted)"). Undefined when the process or mapping is gone.
 */
export function lazyResidency(pid: number, file: string): LazyResidency | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return undefined;
  }
  let inMapping = false;
  let found: LazyResidency | undefined;
  for (const line of text.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ [0-9a-f]+ \S+ \d+\s+(.*)$/.exec(line);
    if (header) {
      inMapping = header[1]!.replace(/ \(deleted\)$/, '') === file;
      if (inMapping) found ??= { mappedBytes: 0, residentBytes: 0, privateBytes: 0, sharedBytes: 0 };
      continue;
    }
    if (!inMapping || !found) continue;
    const field = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (!field) continue;
    const bytes = Number(field[2]) * KIB;
    if (field[1] === 'Size') found.mappedBytes += bytes;
    else if (field[1] === 'Rss') found.residentBytes += bytes;
    else if (field[1] === 'Anonymous') found.privateBytes += bytes;
    else if (field[1] === 'Shared_Clean' || field[1] === 'Shared_Dirty') found.sharedBytes += bytes;
  }
  return found;
}

/** QEMU processes that map `file` (lazily restored VMs running on it). */
export function qemusMapping(file: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!fs.readFileSync(`/proc/${entry}/comm`, 'utf8').startsWith('qemu')) continue;
      if (fs.readFileSync(`/proc/${entry}/maps`, 'utf8').includes(` ${file}\n`)) pids.push(Number(entry));
    } catch {
      // exited, or not ours to read
    }
  }
  return pids;
}
