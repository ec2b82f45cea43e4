// Finds the VMs on this node: QMP sockets matched by the configured globs
// under vmRoot. A VM's namespace and name are the two directories directly
// above its socket, so a VM in namespace A is only ever addressed as A/name.
import fs from 'node:fs';
import path from 'node:path';
import toAbsoluteGlob from '@dsherret/to-absolute-glob';
import { glob } from 'tinyglobby';
import { DNS1123_LABEL_MAX, DNS1123_LABEL_PATTERN } from '../../../api/index.js';
import type { PodVmIdentity } from '../vm/identity.js';
import { probeQmp, type Probe } from './qemu-control.js';

export interface DiscoveredVm {
  namespace: string;
  name: string;
  /** The QMP socket's path on the node (for a pod VM: shown, never opened by path). */
  qmpSocket: string;
  /** Set for a VM found as a Pod (vmSource: pods). */
  pod?: PodVmIdentity;
}

/** How the daemon finds VMs and reaches their QMP: socket globs (Discovery) or Pods (agent/src/vm). */
export interface VmFinder {
  readonly source: 'pods' | 'sockets';
  scan(): Promise<DiscoveredVm[]>;
  find(namespace: string, name: string): Promise<DiscoveredVm | undefined>;
  /** A short connect to the VM's QMP: "absent" when nothing serves it. */
  probe(vm: DiscoveredVm, timeoutMs: number): Promise<Probe>;
  /** Where the VM is looked for, for "not found" messages. */
  describeSearch(namespace: string, name: string): string;
}

export type SocketIdentity = { ok: true; namespace: string; name: string } | { ok: false; reason: string };

const LABEL = new RegExp(DNS1123_LABEL_PATTERN);

export function isDns1123Label(s: string): boolean {
  return s.length > 0 && s.length <= DNS1123_LABEL_MAX && LABEL.test(s);
}

/** `<vmRoot>/.../<namespace>/<name>/<socket>` -> namespace and name, or why the socket is not a VM. */
export function identityFromSocket(vmRoot: string, socketPath: string): SocketIdentity {
  const rel = path.relative(path.resolve(vmRoot), path.resolve(socketPath));
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return { ok: false, reason: `it is outside vmRoot ${vmRoot}` };
  const parts = rel.split(path.sep);
  if (parts.length < 3) {
    return { ok: false, reason: 'it needs two directories above it inside vmRoot (<namespace>/<vmName>/<socket>)' };
  }
  const name = parts[parts.length - 2]!;
  const namespace = parts[parts.length - 3]!;
  if (!isDns1123Label(namespace)) return { ok: false, reason: `its namespace directory "${namespace}" is not a DNS-1123 label` };
  if (!isDns1123Label(name)) return { ok: false, reason: `its VM directory "${name}" is not a DNS-1123 label` };
  return { ok: true, namespace, name };
}

/** The configured globs, relative to vmRoot, made absolute (a leading '/' also means vmRoot). */
export function absoluteGlobs(vmRoot: string, socketGlobs: readonly string[]): string[] {
  return socketGlobs.map((g) => toAbsoluteGlob(g, { cwd: vmRoot, root: vmRoot }));
}

// fdir (under tinyglobby) returns only regular files and symlinks; QMP sockets
// are neither, so their directory entries are presented as files.
function readdirWithSockets(...args: unknown[]): void {
  const callback = args[args.length - 1] as (err: NodeJS.ErrnoException | null, entries?: fs.Dirent[]) => void;
  fs.readdir(args[0] as string, { withFileTypes: true }, (err, entries) => {
    if (err) return callback(err);
    for (const e of entries) if (e.isSocket()) e.isFile = () => true;
    callback(null, entries);
  });
}

function readdirSyncWithSockets(dir: string): fs.Dirent[] {
  const entries = fs.readdirSync(dir, { withFileTypes: true });
  for (const e of entries) if (e.isSocket()) e.isFile = () => true;
  return entries;
}

const socketAwareFs = {
  readdir: readdirWithSockets as unknown as typeof fs.readdir,
  readdirSync: readdirSyncWithSockets as unknown as typeof fs.readdirSync,
};

export interface DiscoveryResult {
  vms: DiscoveredVm[];
  /** Matches that are not VMs, with the reason (for logs). */
  skipped: Array<{ path: string; reason: string }>;
}

/** One scan. Only unix sockets count; the first match of a namespace/name wins. */
export async function discoverVms(vmRoot: string, socketGlobs: readonly string[]): Promise<DiscoveryResult> {
  const root = path.resolve(vmRoot);
  if (!fs.existsSync(root)) return { vms: [], skipped: [] };
  const matches = await glob(absoluteGlobs(root, socketGlobs), { absolute: true, onlyFiles: true, fs: socketAwareFs });
  const vms: DiscoveredVm[] = [];
  const skipped: DiscoveryResult['skipped'] = [];
  const seen = new Map<string, string>();
  for (const match of matches.sort()) {
    const socket = path.resolve(match);
    let isSocket = false;
    try {
      isSocket = fs.statSync(socket).isSocket();
    } catch {
      continue; // vanished since the scan
    }
    if (!isSocket) {
      skipped.push({ path: socket, reason: 'it is not a unix socket' });
      continue;
    }
    const id = identityFromSocket(root, socket);
    if (!id.ok) {
      skipped.push({ path: socket, reason: id.reason });
      continue;
    }
    const key = `${id.namespace}/${id.name}`;
    const first = seen.get(key);
    if (first !== undefined) {
      skipped.push({ path: socket, reason: `VM ${key} already has the socket ${first}` });
      continue;
    }
    seen.set(key, socket);
    vms.push({ namespace: id.namespace, name: id.name, qmpSocket: socket });
  }
  return { vms, skipped };
}

/** Repeated scans that log each skipped path once, not on every scan. */
export class Discovery implements VmFinder {
  readonly source = 'sockets';
  private readonly reported = new Set<string>();

  constructor(
    private readonly vmRoot: string,
    private readonly socketGlobs: readonly string[],
    private readonly onSkip: (path: string, reason: string) => void = () => undefined,
  ) {}

  async scan(): Promise<DiscoveredVm[]> {
    const { vms, skipped } = await discoverVms(this.vmRoot, this.socketGlobs);
    for (const s of skipped) {
      const key = `${s.path}\n${s.reason}`;
      if (this.reported.has(key)) continue;
      this.reported.add(key);
      this.onSkip(s.path, s.reason);
    }
    return vms;
  }

  async find(namespace: string, name: string): Promise<DiscoveredVm | undefined> {
    return (await this.scan()).find((vm) => vm.namespace === namespace && vm.name === name);
  }

  probe(vm: DiscoveredVm, timeoutMs: number): Promise<Probe> {
    return probeQmp(vm.qmpSocket, timeoutMs);
  }

  describeSearch(): string {
    return `looked for ${this.socketGlobs.join(', ')} under ${this.vmRoot}`;
  }
}
