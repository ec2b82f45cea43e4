// What /proc says about a process's privileges, for the node suite's checks that the agent and
// the VM pods run with no more than the chart grants.
import fs from 'node:fs';
import { pidsWhere } from '../../kit/qemu.js';

/** /proc/<pid>/status as fields (CapEff, Seccomp, NoNewPrivs, Uid, ...). */
export function processStatus(pid: number): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (m) fields[m[1]!] = m[2]!;
  }
  return fields;
}

// linux/capability.h numbers, as far as the chart's names need them.
const CAPABILITY_BITS: Record<string, number> = {
  CHOWN: 0, DAC_OVERRIDE: 1, DAC_READ_SEARCH: 2, FOWNER: 3, FSETID: 4, KILL: 5, SETGID: 6, SETUID: 7, SETPCAP: 8,
  NET_BIND_SERVICE: 10, NET_ADMIN: 12, NET_RAW: 13, IPC_LOCK: 14, SYS_CHROOT: 18, SYS_PTRACE: 19, SYS_ADMIN: 21,
  SYS_NICE: 23, SYS_RESOURCE: 24, MKNOD: 27, AUDIT_WRITE: 29, SETFCAP: 31,
};

/** The names of the capabilities in a /proc status mask (hex), sorted; unknown bits as CAP_<n>. */
export function capabilityNames(hexMask: string): string[] {
  const mask = BigInt(`0x${hexMask}`);
  const byBit = new Map(Object.entries(CAPABILITY_BITS).map(([name, bit]) => [bit, name]));
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) if (mask & (1n << BigInt(bit))) names.push(byBit.get(bit) ?? `CAP_${bit}`);
  return names.sort();
}

/** The real, effective, saved and filesystem uids of a process (its /proc status `Uid:` line); undefined once it is gone. */
export function processUids(pid: number): number[] | undefined {
  let uid: string | undefined;
  try {
    uid = processStatus(pid).Uid;
  } catch {
    return undefined;
  }
  return uid?.trim().split(/\s+/).map(Number);
}

/** Pids of every other process on the host whose command line contains `marker` (arguments joined by spaces). */
export function pidsWithCmdline(marker: string): number[] {
  return pidsWhere((argv) => argv.join(' ').includes(marker))
    .filter((pid) => pid !== process.pid)
    .sort((a, b) => a - b);
}
