// VM pods on the node cluster, for the node suite, the bench and the demo: the Pod manifest (built
// from the api/ contract, not written as a string), creating one, its log (the guest's serial
// console is QEMU's stdio: kit/guest.ts guestChecks reads it), and the QEMU process of a pod as
// the host sees it.
import fs from 'node:fs';
import { VM_LABEL, VM_RUN_MOUNT, VM_RUN_VOLUME } from '../api/index.js';
import { KERNEL_CMDLINE_BASE } from '../kit/guest.js';
import { nodeKubectlOk } from './node-cluster.js';

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

/** Creates a VM pod and waits until it runs; returns its uid. */
export async function createVmPod(opts: VmPodOptions): Promise<string> {
  await nodeKubectlOk(['apply', '-f', '-'], { input: JSON.stringify(vmPodManifest(opts)) });
  await nodeKubectlOk(['wait', '--for=condition=Ready', `pod/${opts.name}`, '-n', opts.namespace, '--timeout=120s']);
  return (await nodeKubectlOk(['get', 'pod', opts.name, '-n', opts.namespace, '-o', 'jsonpath={.metadata.uid}'])).trim();
}

/** The VM container's log (the guest's serial console). */
export async function vmLog(namespace: string, pod: string): Promise<string> {
  return nodeKubectlOk(['logs', pod, '-n', namespace, '-c', 'vm']);
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
