// Disk-consistent snapshots. A RAM snapshot is only restorable onto the disks
// as they were at the same instant, so while the VM is paused for the save each
// writable disk's current image becomes a frozen base and the VM continues on a
// new qcow2 overlay (QMP blockdev-snapshot-sync, one transaction: milliseconds,
// whatever the disk's size). A restore never writes to a base: it starts the VM
// on a fresh overlay of its own, so one snapshot restores any number of times.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { QmpClient } from '../qmp/client.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';
import type { OverlayLedger } from './overlay-ledger.js';
import { VmsnapError } from '../errors.js';

export type DiskRecord = NonNullable<SnapshotMetadata['disks']>[number];

interface BlockImage {
  filename: string;
  format: string;
  'virtual-size': number;
  'backing-image'?: BlockImage;
}

/** The part of QMP `query-block` we read. */
export interface BlockInfo {
  device: string;
  qdev?: string;
  inserted?: { ro: boolean; drv: string; 'node-name'?: string; image: BlockImage };
}

export interface WritableDisk {
  /** BlockBackend name (`-drive`), empty for `-blockdev` disks. */
  device: string;
  qdev?: string;
  nodeName?: string;
  /** Top (active) image first, then its backing chain. */
  chain: Array<{ filename: string; format: string }>;
  virtualSize: number;
}

export class DiskError extends VmsnapError {
  override name = 'DiskError';
}

/** Pure: the disks a guest can write (read-only drives, CD-ROMs and empty drives are skipped). */
export function writableDisks(blocks: BlockInfo[]): WritableDisk[] {
  const out: WritableDisk[] = [];
  for (const b of blocks) {
    const ins = b.inserted;
    if (!ins || ins.ro) continue;
    const chain: WritableDisk['chain'] = [];
    for (let img: BlockImage | undefined = ins.image; img; img = img['backing-image']) chain.push({ filename: img.filename, format: img.format });
    out.push({ device: b.device, qdev: b.qdev, nodeName: ins['node-name'], chain, virtualSize: ins.image['virtual-size'] });
  }
  return out;
}

/** Does `arg` name `file` as a whole path (`file=/x/d.img`, `"filename":"/x/d.img"`, ...)? */
function argNamesPath(arg: string, file: string): boolean {
  const escaped = file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(?<=^|[=,:"])${escaped}(?=$|[,"])`).test(arg);
}

/**
 * Pure: the image of the disk's chain that the QEMU command line names (what a
 * relaunch must point at a new overlay). Top first: after earlier snapshots the
 * command line still names an image further down.
 */
export function argvImagePath(argv: string[], disk: WritableDisk, cwd?: string): string {
  for (const { filename } of disk.chain) {
    const candidates = [filename, ...(cwd && filename.startsWith(cwd + '/') ? [path.relative(cwd, filename)] : [])];
    for (const c of candidates) if (argv.slice(1).some((a) => argNamesPath(a, c))) return c;
  }
  throw new DiskError(
    `disk ${diskName(disk)}: none of its images (${disk.chain.map((c) => c.filename).join(' <- ')}) appears in the QEMU command line, ` +
      'so a restore could not start it on a fresh overlay (was it hot-plugged?)',
  );
}

function diskName(d: { device?: string; qdev?: string; nodeName?: string }): string {
  return d.device || d.qdev || d.nodeName || '?';
}

/** `disk.raw` and `disk.raw.vmsnap-x.qcow2` both give `disk.raw.vmsnap-<new>.qcow2` (names do not grow). */
export function overlayPath(dir: string, argvPath: string): string {
  const stem = path.basename(argvPath).replace(/(\.vmsnap-[0-9a-z]+\.qcow2)+$/, '');
  return path.join(dir, `${stem}.vmsnap-${Date.now().toString(36)}${randomBytes(3).toString('hex')}.qcow2`);
}

/** The metadata record of a disk whose current image is the base (no overlay yet). */
export function diskRecord(d: WritableDisk, argv: string[], cwd?: string): DiskRecord {
  const base = d.chain[0]!;
  // The base absolute (QEMU reports a relative -drive path as given); argvPath as the command line says it.
  const abs = path.resolve(cwd ?? '/', base.filename);
  return { device: diskName(d), argvPath: argvImagePath(argv, d, cwd), base: abs, baseFormat: base.format, baseFile: fileId(abs), virtualSize: d.virtualSize };
}

/**
 * Freezes every writable disk of a paused VM: one `transaction` of
 * blockdev-snapshot-sync, so either every disk moved to its overlay or none.
 * The overlays sit beside the active image. Returns the records for the
 * snapshot's metadata (with `overlay`, the layer the VM continues on).
 */
export async function freezeDisks(client: QmpClient, disks: WritableDisk[], argv: string[], cwd: string | undefined, ledger: OverlayLedger): Promise<DiskRecord[]> {
  const records = disks.map((d) => {
    const r = diskRecord(d, argv, cwd);
    return { ...r, overlay: overlayPath(path.dirname(r.base), r.argvPath) };
  });
  try {
    await snapshotOnto(client, disks.map((d, i) => ({ disk: d, overlay: records[i]!.overlay })));
  } catch (err) {
    // Aborted: nothing uses them. Only a plain file is unlinked (the name is ours, the directory the tenant's).
    for (const r of records) if (r.overlay && isPlainFile(r.overlay)) fs.rmSync(r.overlay, { force: true });
    throw new DiskError(`could not freeze the VM's disks: ${(err as Error).message}`);
  }
  // QEMU made each overlay at a name the agent chose: recorded now, it is what a later merge may delete.
  for (const r of records) ledger.record(r.overlay, 'freeze');
  return records;
}

/**
 * One `transaction` of blockdev-snapshot-sync: QEMU creates each qcow2 overlay (backed by the
 * disk's current top) and moves the disk onto it; all disks or none.
 */
export async function snapshotOnto(client: QmpClient, moves: Array<{ disk: Pick<WritableDisk, 'device' | 'nodeName'>; overlay: string }>): Promise<void> {
  const stamp = Date.now().toString(36);
  const actions = moves.map(({ disk: d, overlay }, i) => ({
    type: 'blockdev-snapshot-sync',
    data: {
      ...(d.device ? { device: d.device } : { 'node-name': d.nodeName }),
      'snapshot-file': overlay,
      // Required when the disk is named by node (-blockdev); unique for the QEMU's life.
      'snapshot-node-name': `vmsnap-${stamp}-${i}`,
      format: 'qcow2',
      mode: 'absolute-paths',
    },
  }));
  if (actions.length > 0) await client.execute('transaction', { actions });
}

function isPlainFile(file: string): boolean {
  try {
    return fs.lstatSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * How a save freezes writable disks. The host's (hostDiskFreezer) checks the images against the
 * QEMU process's fds and records the agent's overlays in its ledger; a VM pod's (vm/pod-disks.ts)
 * never looks at the files: the pod's QEMU does all file work, as the pod's user.
 */
export interface DiskFreezer {
  /** Refuses disks a save must not freeze or record (throws DiskError), before anything is touched. */
  check(disks: WritableDisk[], vm: { pid: number; argv: string[]; cwd?: string }): void;
  /** The records of disks left as they are (the VM stops after the save). */
  records(disks: WritableDisk[], argv: string[], cwd?: string): DiskRecord[];
  /** Moves the paused VM's disks onto new overlays (one transaction) and returns their records. */
  freeze(client: QmpClient, disks: WritableDisk[], argv: string[], cwd?: string): Promise<DiskRecord[]>;
}

export function hostDiskFreezer(ledger: OverlayLedger): DiskFreezer {
  return {
    check(disks, vm) {
      // A disk that a relaunch could not find in the command line fails the save before anything is touched.
      for (const d of disks) argvImagePath(vm.argv, d, vm.cwd);
      // What query-block names is the tenant's word; only images the QEMU process really holds are frozen and recorded.
      if (disks.length > 0) checkHeldBy(vm.pid, disks, vm.cwd);
    },
    records: (disks, argv, cwd) => disks.map((d) => diskRecord(d, argv, cwd)),
    freeze: (client, disks, argv, cwd) => freezeDisks(client, disks, argv, cwd, ledger),
  };
}

/** Device and inode of the file a path leads to now (what a restore checks the base against). */
export function fileId(file: string): { dev: number; ino: number } {
  const st = fs.statSync(file);
  return { dev: st.dev, ino: st.ino };
}

/**
 * Refuses a disk image the QEMU process behind the socket does not itself
 * hold open. `query-block` is the tenant's word: a QEMU (or a fake speaking
 * QMP) could name a host file it cannot read, for the agent to freeze, back a
 * restore on, or merge. A file among the process's own fds is one the tenant
 * could open anyway.
 */
export function checkHeldBy(pid: number, disks: WritableDisk[], cwd?: string): void {
  const held = new Set<string>();
  const dir = `/proc/${pid}/fd`;
  for (const fd of fs.readdirSync(dir)) {
    try {
      const st = fs.statSync(path.join(dir, fd));
      held.add(`${st.dev}:${st.ino}`);
    } catch {
      // closed meanwhile
    }
  }
  for (const d of disks) {
    const image = path.resolve(cwd ?? '/', d.chain[0]!.filename);
    let id: string;
    try {
      const st = fs.statSync(image);
      id = `${st.dev}:${st.ino}`;
    } catch (err) {
      throw new DiskError(`disk ${diskName(d)}: QEMU reports the image ${image}, which cannot be looked at: ${(err as Error).message}`);
    }
    if (!held.has(id)) {
      throw new DiskError(
        `disk ${diskName(d)}: QEMU (pid ${pid}) reports the image ${image} but does not have it open: ` +
          'the process behind the QMP socket does not run that disk, so it is not frozen or recorded',
      );
    }
  }
}

/** Runs qemu-img with `fd` as its fd 3 (/dev/fd/3): it writes into the file the agent created, whatever the name leads to by then. */
function qemuImgOnFd(args: string[], fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-img', args, { stdio: ['ignore', 'ignore', 'pipe', fd] });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`qemu-img ${args[0]} exited ${code}: ${stderr.trim()}`))));
  });
}

/** Refuses a base that is not the file the save froze (when the header recorded its device and inode). */
function checkBase(d: DiskRecord): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(d.base);
  } catch {
    throw new DiskError(`disk ${d.device}: the snapshot's frozen base ${d.base} is missing; the snapshot cannot be restored`);
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new DiskError(`disk ${d.device}: the snapshot's frozen base ${d.base} is not a file`);
  if (d.baseFile && (st.dev !== d.baseFile.dev || st.ino !== d.baseFile.ino)) {
    throw new DiskError(
      `disk ${d.device}: ${d.base} is no longer the base the snapshot froze (another file was put in its place); ` +
        'the snapshot cannot be restored onto it',
    );
  }
}

/**
 * Creates a fresh qcow2 overlay on each frozen base for a restored VM and
 * returns the command-line rewrites that start the VM on them. `dirFor` maps
 * the directory of a disk in the recorded command line (made absolute against
 * the recorded `cwd`) to where the restored VM's overlay goes (a copy's own directory).
 */
export async function createRestoreOverlays(disks: DiskRecord[], dirFor: (dir: string) => string, cwd: string | undefined, ledger: OverlayLedger): Promise<DiskRewrite[]> {
  const made: DiskRewrite[] = [];
  const { O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
  try {
    for (const d of disks) {
      // The bases come from a header the caller checked (the agent: MACed with its key), and must still be the file frozen.
      checkBase(d);
      const overlay = overlayPath(dirFor(path.dirname(path.resolve(cwd ?? '/', d.argvPath))), d.argvPath);
      fs.mkdirSync(path.dirname(overlay), { recursive: true });
      // Created here, O_EXCL|O_NOFOLLOW, and handed to qemu-img as an fd: a name planted in the VM's directory is never written through.
      const fd = fs.openSync(overlay, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644);
      try {
        ledger.record(overlay, 'restore', fd);
        made.push({ from: d.argvPath, to: overlay });
        // -u: the size is recorded, so the base is not opened (a running VM holds its lock).
        await qemuImgOnFd(['create', '-q', '-f', 'qcow2', '-u', '-b', d.base, '-F', d.baseFormat, '/dev/fd/3', String(d.virtualSize)], fd);
      } finally {
        fs.closeSync(fd);
      }
    }
  } catch (err) {
    removeOverlays(made, ledger);
    throw err instanceof DiskError ? err : new DiskError(`could not create a restore overlay: ${(err as Error).message}`);
  }
  return made;
}

/** Removes overlays created for a restore that did not happen (only as the ledger recorded them). */
export function removeOverlays(rewrites: DiskRewrite[], ledger: OverlayLedger): void {
  for (const r of rewrites) ledger.remove(r.to);
}

/** A disk image of the recorded command line and the qcow2 overlay that replaces it. */
export interface DiskRewrite {
  from: string;
  to: string;
}

/** Splits QEMU keyval options (`a=1,b=x,,y`: a doubled comma is a literal comma). */
function splitKeyval(s: string): string[] {
  return s.split(/(?<!,),(?!,)/).map((p) => p.replace(/,,/g, ','));
}
function joinKeyval(parts: string[]): string {
  return parts.map((p) => p.replace(/,/g, ',,')).join(',');
}

/**
 * Pure: the command line with each disk image replaced by its overlay and the
 * format layer above it switched to qcow2 (`-drive`, keyval and JSON `-blockdev`).
 */
export function rewriteDiskArgs(argv: string[], rewrites: DiskRewrite[]): string[] {
  if (rewrites.length === 0) return argv;
  const target = new Map(rewrites.map((r) => [r.from, r.to]));
  const out = [...argv];
  const fileNodes = new Set<string>();
  for (let i = 1; i < out.length; i++) {
    const opt = out[i - 1];
    if (opt === '-drive') out[i] = rewriteDrive(out[i]!, target);
    else if (opt === '-blockdev' && out[i]!.startsWith('{')) out[i] = rewriteBlockdevJson(out[i]!, target, fileNodes);
    else if (opt === '-blockdev') out[i] = rewriteBlockdevKeyval(out[i]!, target, fileNodes);
  }
  // Second pass: a format node on top of a rewritten file node becomes qcow2.
  for (let i = 1; i < out.length; i++) {
    if (out[i - 1] !== '-blockdev') continue;
    if (out[i]!.startsWith('{')) {
      const o = JSON.parse(out[i]!) as Record<string, unknown>;
      if (typeof o['file'] === 'string' && fileNodes.has(o['file'])) out[i] = JSON.stringify({ ...o, driver: 'qcow2' });
    } else {
      const parts = splitKeyval(out[i]!);
      if (parts.some((p) => p.startsWith('file=') && fileNodes.has(p.slice(5)))) {
        out[i] = joinKeyval(parts.map((p) => (p.startsWith('driver=') ? 'driver=qcow2' : p)));
      }
    }
  }
  return out;
}

function rewriteDrive(value: string, target: Map<string, string>): string {
  const parts = splitKeyval(value);
  const file = parts.find((p) => p.startsWith('file='));
  const to = file && target.get(file.slice(5));
  if (!to) return value;
  const rest = parts.filter((p) => !p.startsWith('file=') && !p.startsWith('format='));
  return joinKeyval([`file=${to}`, 'format=qcow2', ...rest]);
}

function rewriteBlockdevKeyval(value: string, target: Map<string, string>, fileNodes: Set<string>): string {
  const parts = splitKeyval(value);
  const nested = parts.find((p) => p.startsWith('file.filename='));
  const own = parts.find((p) => p.startsWith('filename='));
  if (nested && target.has(nested.slice('file.filename='.length))) {
    const to = target.get(nested.slice('file.filename='.length))!;
    return joinKeyval(parts.map((p) => (p === nested ? `file.filename=${to}` : p.startsWith('driver=') ? 'driver=qcow2' : p)));
  }
  if (own && target.has(own.slice('filename='.length))) {
    const node = parts.find((p) => p.startsWith('node-name='));
    if (node) fileNodes.add(node.slice('node-name='.length));
    return joinKeyval(parts.map((p) => (p === own ? `filename=${target.get(own.slice('filename='.length))}` : p)));
  }
  return value;
}

function rewriteBlockdevJson(value: string, target: Map<string, string>, fileNodes: Set<string>): string {
  const o = JSON.parse(value) as Record<string, unknown>;
  const file = o['file'];
  if (file && typeof file === 'object' && typeof (file as Record<string, unknown>)['filename'] === 'string') {
    const to = target.get((file as Record<string, string>)['filename']!);
    if (to) return JSON.stringify({ ...o, driver: 'qcow2', file: { ...(file as object), filename: to } });
  }
  if (typeof o['filename'] === 'string' && target.has(o['filename'])) {
    if (typeof o['node-name'] === 'string') fileNodes.add(o['node-name']);
    return JSON.stringify({ ...o, filename: target.get(o['filename']) });
  }
  return value;
}

/**
 * Pure: a locally administered unicast MAC derived from the VM name and the
 * NIC's index, so a copy never shares its source's address on a bridge.
 */
export function copyMac(vmName: string, index: number): string {
  const h = [...`${vmName}/${index}`].reduce((a, c) => Math.imul(a ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261);
  const bytes = [0x52, 0x56, (h >>> 24) & 0xff, (h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff];
  bytes[0] = (bytes[0]! & 0xfe) | 0x02;
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Pure: every `mac=` of `-device`/`-nic`/`-net` replaced by copyMac(vmName, n), n counting NICs. */
export function rewriteMacs(argv: string[], vmName: string): string[] {
  let n = 0;
  return argv.map((arg, i) => {
    if (i === 0 || !['-device', '-nic', '-net'].includes(argv[i - 1]!)) return arg;
    if (!/(^|,)mac=/.test(arg)) return arg;
    const mac = copyMac(vmName, n++);
    return arg.replace(/(^|,)mac=[^,]*/, `$1mac=${mac}`);
  });
}
