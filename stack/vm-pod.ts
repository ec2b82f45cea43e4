// VM pods for the node suite and the demo: the Pod manifest (built from the api/ contract, not
// written as a string), the QEMU process of a pod as the host sees it, and the guest's memory
// checks read from the container log (the guest's serial console is QEMU's stdio).
import fs from 'node:fs';
import { VM_LABEL, VM_RUN_MOUNT, VM_RUN_VOLUME } from '../../api/index.js';
import { KERNEL_CMDLINE_BASE } from '../../kit/guest.js';

/** Where the guest image keeps the test guest's kernel and initramfs. */
export const GUEST_KERNEL = '/guest/vmlinuz';
export const GUEST_INITRD = '/guest/initrd.img';
/** The uid the VM image runs as (its USER). */
export const VM_UID = 10001;

export interface VmPodOptions {
  namespace: string;
  /** Pod name; the VM name (label value) defaults to it. */
  name: string;
  vmName?: string;
  image: string;
  memMiB?: number;
  fillMiB?: number;
  seed?: number;
  /** Rewrites the container args (the QEMU command line): e.g. a tenant's wrapper script. */
  args?: (qemuArgs: string[]) => string[];
}

/** The QEMU command line of the memory-verifying test guest inside the guest image. */
export function guestQemuArgs(opts: { name: string; memMiB: number; fillMiB: number; seed: number }): string[] {
  return [
    'qemu-system-x86_64',
    '-accel', 'tcg',
    '-machine', 'pc',
    '-cpu', 'qemu64',
    '-smp', '1',
    '-m', String(opts.memMiB),
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-no-reboot',
    '-name', opts.name,
    '-kernel', GUEST_KERNEL,
    '-initrd', GUEST_INITRD,
    '-append', `${KERNEL_CMDLINE_BASE} vmsnap.fill_mib=${opts.fillMiB} vmsnap.seed=${opts.seed}`,
    '-serial', 'stdio',
  ];
}

/** A Pod that runs one VM under the vmsnap launcher, fit for Pod Security `restricted`. */
export function vmPodManifest(opts: VmPodOptions): Record<string, unknown> {
  const memMiB = opts.memMiB ?? 256;
  const vmName = opts.vmName ?? opts.name;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: opts.name, namespace: opts.namespace, labels: { [VM_LABEL]: vmName } },
    spec: {
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 10,
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      securityContext: {
        runAsNonRoot: true,
        runAsUser: VM_UID,
        runAsGroup: VM_UID,
        fsGroup: VM_UID,
        seccompProfile: { type: 'RuntimeDefault' },
      },
      containers: [
        {
          name: 'vm',
          image: opts.image,
          imagePullPolicy: 'IfNotPresent',
          args: (opts.args ?? ((a: string[]) => a))(guestQemuArgs({ name: vmName, memMiB, fillMiB: opts.fillMiB ?? 64, seed: opts.seed ?? 1 })),
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
          resources: { requests: { memory: `${memMiB + 128}Mi` } },
          volumeMounts: [{ name: VM_RUN_VOLUME, mountPath: VM_RUN_MOUNT }],
        },
      ],
      volumes: [{ name: VM_RUN_VOLUME, emptyDir: {} }],
    },
  };
}

/** True when /proc/<pid>/cgroup places the process in the pod with this uid (cgroupfs or systemd naming). */
export function inPod(pid: number, podUid: string): boolean {
  let cgroup: string;
  try {
    cgroup = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return false;
  }
  return cgroup.includes(`pod${podUid}`) || cgroup.includes(`pod${podUid.replaceAll('-', '_')}`);
}

/** The pids of QEMU processes running in the pod with this uid, seen from the host. */
export function qemuPidsOfPod(podUid: string): number[] {
  return pidsOfPod(podUid, (pid) => fs.readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('qemu-system'));
}

/** The pids in the pod with this uid whose command line matches `cmdline`, seen from the host. */
export function processesOfPod(podUid: string, cmdline: RegExp): number[] {
  return pidsOfPod(podUid, (pid) => cmdline.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')));
}

function pidsOfPod(podUid: string, match: (pid: number) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      if (match(pid) && inPod(pid, podUid)) pids.push(pid);
    } catch {
      // exited meanwhile
    }
  }
  return pids.sort((a, b) => a - b);
}

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

export interface GuestChecks {
  /** Highest `VMSNAP PASS n=` in the log. */
  lastPass: number;
  /** How many PASS lines the log holds (grows while the guest runs and verifies). */
  passCount: number;
  bad: string[];
}

/** Reads the guest's memory checks out of its serial console (the container log). */
export function guestChecks(log: string): GuestChecks {
  let lastPass = 0;
  let passCount = 0;
  const bad: string[] = [];
  for (const m of log.matchAll(/VMSNAP (PASS n=(\d+) ok|BAD[^\r\n]*)/g)) {
    if (m[2] !== undefined) {
      passCount++;
      lastPass = Math.max(lastPass, Number(m[2]));
    } else bad.push(m[1]!);
  }
  return { lastPass, passCount, bad };
}

/** The real, effective, saved and filesystem uids of a process (its /proc status `Uid:` line); undefined once it is gone. */
export function processUids(pid: number): number[] | undefined {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const line = /^Uid:\s+(.*)$/m.exec(status);
  return line ? line[1]!.trim().split(/\s+/).map(Number) : undefined;
}

/** Pids of every process on the host whose command line contains `marker` (NUL separators read as spaces). */
export function pidsWithCmdline(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').includes(marker)) pids.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return pids.sort((a, b) => a - b);
}
