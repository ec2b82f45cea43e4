// The QEMU command line the launcher runs: the pod's own (container args, binary first) plus what
// the launcher owns. Pure, so the refusals and the composition are tested without a QEMU.
//
// The refusals keep the launcher's contract with the agent (one QMP socket at a known path, a
// process the launcher can stop and restart, `-incoming` only when the launcher says so). They are
// not a security boundary: QEMU runs as the pod's user under `-sandbox`, and the agent treats
// everything in the pod as tenant input.
import path from 'node:path';
import { VM_LAUNCHER_SOCKET, VM_QMP_SOCKET, type DiskSwap, type LazyMapping } from '../../api/vm-pod.js';
import { planLazyArgv } from '../src/engine/lazy/plan.js';
import { argvImagePath, DiskError, rewriteDiskArgs, type DiskRewrite } from '../src/engine/disks.js';

/**
 * QEMU's seccomp filter: no obsolete syscalls, no setuid/setgid, no fork/exec (no `-netdev
 * ...script=`, no `exec:` migration), no scheduler or cgroup changes. A `-sandbox` already on the
 * pod's command line is kept: seccomp filters stack, so it can only narrow this one.
 */
export const QEMU_SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

export interface RunPaths {
  runDir: string;
  qmpSocket: string;
  launcherSocket: string;
}

export function runPaths(runDir: string): RunPaths {
  const dir = path.resolve(runDir);
  return { runDir: dir, qmpSocket: path.join(dir, VM_QMP_SOCKET), launcherSocket: path.join(dir, VM_LAUNCHER_SOCKET) };
}

/** A pod command line the launcher will not run; the message names the option. */
export class CommandLineError extends Error {
  override name = 'CommandLineError';
}

// QEMU reads `--name` as `-name`. `-incoming` is the launcher's to add; `-daemonize` would fork
// QEMU away from the launcher, which then could neither watch nor stop it.
const REFUSED_OPTIONS: Record<string, string> = {
  incoming: 'the launcher adds -incoming defer itself when the agent asks for a restore',
  daemonize: 'QEMU must stay the launcher\'s child so the launcher can stop and restart it',
};

function optionName(arg: string): string | undefined {
  if (!arg.startsWith('-') || arg === '-' || arg === '--') return undefined;
  return arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
}

/**
 * Paths an argument may name: the whole argument and each comma-separated part, without a
 * `key=` prefix and without a `unix:` prefix (`-qmp unix:P,server=on`, `-chardev
 * socket,id=x,path=P`, `-monitor unix:P`, `-serial unix:P`). QEMU writes a literal comma as `,,`.
 */
function namedPaths(arg: string): string[] {
  const parts = arg.split(/(?<!,),(?!,)/).map((p) => p.replaceAll(',,', ','));
  const out = new Set<string>([arg]);
  for (const part of parts) {
    const value = part.replace(/^[A-Za-z0-9_.-]+=/, '');
    for (const v of [part, value]) {
      out.add(v);
      if (v.startsWith('unix:')) out.add(v.slice('unix:'.length).replace(/^path=/, ''));
    }
  }
  return [...out].filter((p) => p.length > 0);
}

/**
 * Throws CommandLineError when the pod's command line cannot be run by the launcher. Every
 * argument starting with `-` is read as an option, also where QEMU would read it as an option's
 * value: refusing too much there costs a renamed value; missing an option would break a restore.
 * Paths are compared after resolving them against `cwd` (QEMU resolves relative paths there).
 */
export function checkPodCommandLine(argv: readonly string[], paths: RunPaths, cwd: string): void {
  const [binary] = argv;
  if (binary === undefined || binary === '') {
    throw new CommandLineError('no QEMU command line: the container args must start with the QEMU binary');
  }
  if (binary.startsWith('-')) {
    throw new CommandLineError(`the container args must start with the QEMU binary, not the option ${binary}`);
  }
  const owned = new Map([
    [paths.qmpSocket, 'the QMP socket'],
    [paths.launcherSocket, 'the launcher control socket'],
  ]);
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i]!;
    const name = optionName(arg);
    const why = name === undefined ? undefined : REFUSED_OPTIONS[name];
    if (why !== undefined) throw new CommandLineError(`refusing the QEMU option ${arg}: ${why}`);
    for (const p of namedPaths(arg)) {
      const what = owned.get(path.resolve(cwd, p));
      if (what === undefined) continue;
      const option = name === undefined && i > 1 ? `${argv[i - 1]} ${arg}` : arg;
      throw new CommandLineError(
        `refusing the QEMU option ${option}: ${path.resolve(cwd, p)} is ${what}, which the launcher owns (it adds -qmp there itself)`,
      );
    }
  }
}

/** A QEMU option value holding a path: QEMU splits on `,` and reads `,,` as a literal comma. */
function qemuOptValue(p: string): string {
  return p.replaceAll(',', ',,');
}

/** The fd number QEMU inherits the snapshot on in a lazy restart (after stdin, stdout, stderr). */
export const LAZY_SNAPSHOT_FD = 3;

/**
 * The argv the launcher spawns (binary first). Call checkPodCommandLine on `podArgv` first.
 * With `lazy` (only with incoming): the main RAM block is mapped from the inherited fd
 * LAZY_SNAPSHOT_FD, composed by the same plan as the agent's own lazy restores (lazy/plan.ts);
 * a command line whose RAM cannot be mapped (hugepages, shared memory, vhost-user, VFIO) is refused.
 */
export function qemuArgv(podArgv: readonly string[], paths: RunPaths, opts: { incoming: boolean; lazy?: LazyMapping; disks?: DiskSwap[]; cwd?: string }): string[] {
  if (opts.disks && !opts.incoming) throw new CommandLineError('starting disks on a snapshot\'s frozen layers is for a restore, so it needs -incoming defer');
  const argv = [
    ...(opts.disks ? swapDisks(podArgv, opts.disks, opts.cwd ?? process.cwd()) : podArgv),
    // wait=off: QEMU starts without a client; the agent connects when it has work.
    '-qmp', `unix:${qemuOptValue(paths.qmpSocket)},server=on,wait=off`,
    '-sandbox', QEMU_SANDBOX,
    ...(opts.incoming ? ['-incoming', 'defer'] : []),
  ];
  if (!opts.lazy) return argv;
  if (!opts.incoming) throw new CommandLineError('a lazy start maps a snapshot, so it needs -incoming defer');
  const plan = planLazyArgv(argv, {
    file: `/proc/self/fd/${LAZY_SNAPSHOT_FD}`,
    blockId: opts.lazy.ramBackendId,
    size: opts.lazy.sizeBytes,
    offset: opts.lazy.offset,
  });
  if (!plan.lazy) throw new CommandLineError(`the VM's RAM cannot be mapped from the snapshot: ${plan.reason}`);
  return plan.argv;
}

/**
 * Pure: the pod's command line with each swapped disk's image replaced by its chain's top (the
 * snapshot's frozen layer, qcow2). The image the command line names must be in the chain: the
 * pod's QEMU froze that very disk (its chain reaches down to what the command line opens).
 */
export function swapDisks(podArgv: readonly string[], disks: DiskSwap[], cwd: string): string[] {
  const rewrites: DiskRewrite[] = [];
  for (const [i, d] of disks.entries()) {
    let named: string;
    try {
      named = argvImagePath([...podArgv], { device: `disks[${i}]`, chain: d.chain.map((filename) => ({ filename, format: 'qcow2' })), virtualSize: 0 }, cwd);
    } catch (err) {
      throw new CommandLineError(err instanceof DiskError ? `restart-incoming ${err.message.replace(/^disk /, '')}` : String(err));
    }
    if (path.resolve(cwd, named) !== d.chain[0]) rewrites.push({ from: named, to: d.chain[0]! });
  }
  return rewriteDiskArgs([...podArgv], rewrites);
}
