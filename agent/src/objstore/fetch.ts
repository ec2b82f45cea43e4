// Restores on a node other than the snapshot's: the snapshot is fetched from its class's
// repository into this node's cache, every part checked against the manifest's SHA-256 (and
// AES-256-GCM when encrypted), then its header is re-sealed with this node's header key so the
// ordinary restore checks (identity, structure CRC, MACs) apply to it as to a local file.
//
// Cache: `<storageRoot>/<namespace>/fetched/<name>-<uid>.vms`, reused by later restores of the
// same snapshot on this node; reclaimed (see reclaimFetchedCopies) once its VMSnapshot is gone
// and no restore on the node is reading it. A VM restored lazily keeps its mapping after that
// (the kernel frees the space when it exits).
import fs from 'node:fs';
import path from 'node:path';
import { snapshotFileName, snapshotObjectPrefix, UploadPhase, type VMSnapshot } from '../../../api/index.js';
import type { Kube } from '../../../kube/client.js';
import type { AgentContext } from '../daemon/context.js';
import { headerTrust, snapshotIdentity } from '../daemon/header-trust.js';
import { assertUnder } from '../daemon/paths.js';
import { nodeHeaderKey } from '../engine/header-key.js';
import { checkSnapshotIdentity, writeHeader, type SnapshotHeader } from '../snapshot-file/header.js';
import { decodeHeader, readHeader } from '../snapshot-file/read.js';
import { structureChecks } from '../snapshot-file/structure-crc.js';
import { verifySnapshotFile } from '../snapshot-file/verify.js';
import { repositoryTarget } from './access.js';
import { downloadSnapshot } from './download.js';
import type { ManifestPart } from './manifest.js';
import { traceStep } from '../clock.js';
import { native } from '../native.js';

export const FETCHED_DIR = 'fetched';

export function fetchedCopyPath(storageRoot: string, snap: Pick<VMSnapshot, 'metadata'>): string {
  const ns = snap.metadata.namespace!;
  const file = path.join(storageRoot, ns, FETCHED_DIR, snapshotFileName(snap));
  return assertUnder(path.join(storageRoot, ns), file, 'the fetched snapshot copy');
}

/** Whether a restore of `snap` on `nodeName` must fetch it from the repository. */
export function needsFetch(snap: VMSnapshot, nodeName: string): boolean {
  return snap.status?.nodeName !== nodeName;
}

/**
 * Re-seals a downloaded file for this node: its identity must be `snap`'s and its structure CRC
 * the one recorded at save time; then the structure MAC and header MAC are written under this
 * node's key (the saving node's key never leaves it).
 */
export function resealForThisNode(file: string, storageRoot: string, snap: Pick<VMSnapshot, 'metadata'>): void {
  const header = readHeader(file);
  checkSnapshotIdentity(header.metadata.snapshot, snapshotIdentity(snap), `the downloaded file ${file}`);
  if (header.state !== 'complete') throw new Error(`the downloaded file ${file} is an incomplete snapshot`);
  const key = nodeHeaderKey(storageRoot);
  const checks = structureChecks(file, header.streamOffset, undefined, key);
  if (checks.crc32 !== header.metadata.stream.structureCrc32) {
    throw new Error(`the downloaded file ${file} does not match the structure checksum recorded at save time`);
  }
  const fd = fs.openSync(file, 'r+');
  try {
    writeHeader(fd, 'complete', { ...header.metadata, stream: { ...header.metadata.stream, structureMac: checks.mac } }, key);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The header of a snapshot still downloading, from the part that carries the file's first bytes:
 * intact, complete and naming `snap`, as the re-seal checks it; undefined for any other part or
 * one that does not hold the whole header. Those bytes checked out against the manifest's SHA-256
 * (and AES-256-GCM), which is what the whole copy's trust rests on; the stream structure is
 * checked once every part is in (resealForThisNode), before anything is loaded.
 */
export function headerOfFirstPart(part: Pick<ManifestPart, 'segments'>, plain: Buffer, snap: Pick<VMSnapshot, 'metadata'>): SnapshotHeader | undefined {
  const first = part.segments[0];
  if (first?.offset !== 0) return undefined;
  try {
    const header = decodeHeader(plain.subarray(0, first.length), 'the downloaded header');
    checkSnapshotIdentity(header.metadata.snapshot, snapshotIdentity(snap), 'the downloaded header');
    return header.state === 'complete' ? header : undefined;
  } catch {
    return undefined; // the whole copy's checks say what is wrong with it
  }
}

/**
 * Drops the copy's pages from the page cache. QEMU's O_DIRECT reads of a file whose pages are
 * cached (as a download leaves them) ran four times slower here than from the disk: 852 MiB
 * loaded in 2.3 s against 0.56 s once dropped (docs/benchmarks.md). The pages are clean: the
 * download and the re-seal synced them.
 */
export function dropFromPageCache(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    native().fadviseDontNeed(fd, 0, 0);
  } finally {
    fs.closeSync(fd);
  }
}

export interface FetchOptions {
  signal?: AbortSignal;
  /** The restore reads the copy with O_DIRECT, so it leaves it out of the page cache. */
  forDirectIO?: boolean;
  /** While downloading: the header, once the part that holds it checked out (headerOfFirstPart). Not called for a cached copy. */
  onHeader?: (header: SnapshotHeader) => void;
}

/** The local, verified copy of an uploaded snapshot: from the cache, else downloaded now. */
export async function fetchSnapshot(ctx: AgentContext, namespace: string, snap: VMSnapshot, opts: FetchOptions = {}): Promise<string> {
  const file = await localCopy(ctx, namespace, snap, opts);
  if (opts.forDirectIO) {
    dropFromPageCache(file);
    traceStep('fetch: dropped from the page cache');
  }
  return file;
}

async function localCopy(ctx: AgentContext, namespace: string, snap: VMSnapshot, { signal, onHeader }: FetchOptions): Promise<string> {
  const repo = snap.status?.effective?.repository;
  const ref = `VMSnapshot ${snap.metadata.namespace}/${snap.metadata.name}`;
  if (!repo) throw new Error(`${ref} is on node ${snap.status?.nodeName} and its class has no repository: restore it on that node`);
  if (snap.status?.upload?.phase !== UploadPhase.Uploaded) {
    throw new Error(`${ref} is not uploaded (upload ${snap.status?.upload?.phase ?? 'absent'}${snap.status?.upload?.message ? `: ${snap.status.upload.message}` : ''})`);
  }
  const file = fetchedCopyPath(ctx.config.storageRoot, snap);
  if (fs.existsSync(file)) {
    try {
      verifySnapshotFile(file, headerTrust(ctx.config.storageRoot, snap));
      ctx.log.info({ file }, 'using the cached copy of the uploaded snapshot');
      return file;
    } catch (err) {
      ctx.log.warn({ file, err: String(err) }, 'the cached copy does not verify; fetching it again');
      fs.rmSync(file, { force: true });
    }
  }
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const prefix = snapshotObjectPrefix(repo, { namespace: snap.metadata.namespace!, name: snap.metadata.name!, uid: snap.metadata.uid! });
  const target = await repositoryTarget(ctx.kube, namespace, repo, prefix);
  const started = Date.now();
  const run = async () => {
    const onPart = onHeader
      ? (part: ManifestPart, plain: Buffer) => {
          const header = headerOfFirstPart(part, plain, snap);
          if (!header) return;
          traceStep('fetch: header checked');
          onHeader(header);
        }
      : undefined;
    traceStep('fetch: downloading');
    const manifest = await downloadSnapshot(target, file, { signal, onPart });
    traceStep('fetch: downloaded');
    try {
      resealForThisNode(file, ctx.config.storageRoot, snap);
      traceStep('fetch: re-sealed');
    } catch (err) {
      fs.rmSync(file, { force: true });
      throw err;
    }
    return manifest;
  };
  const manifest = ctx.metrics ? await ctx.metrics.transfer('download', run, (m) => m.dataBytes) : await run();
  ctx.log.info({ file, dataBytes: manifest.dataBytes, durationMs: Date.now() - started }, 'fetched the snapshot from its repository');
  return file;
}

/**
 * Cache rule (pure): of the entries of one namespace's fetched directory, those to remove: every
 * file (the copy, its digests, a partial download) whose VMSnapshot no longer exists or is being
 * deleted (any deletion policy: the copy is this node's cache, not the snapshot), unless a restore
 * here is reading that copy.
 */
export function fetchedEntriesToRemove(dir: string, entries: readonly string[], liveFileNames: ReadonlySet<string>, filesInUse: ReadonlyMap<string, number>): string[] {
  return entries.filter((name) => {
    const base = name.endsWith('.digests') ? name.slice(0, -'.digests'.length) : name.replace(/\.partial$/, '');
    return !liveFileNames.has(base) && !filesInUse.has(path.join(dir, base));
  });
}

/** Applies the cache rule to every namespace's fetched copies on this node; returns what it removed. */
export async function reclaimFetchedCopies(kube: Kube, storageRoot: string, filesInUse: ReadonlyMap<string, number>): Promise<string[]> {
  const removed: string[] = [];
  for (const ns of fs.existsSync(storageRoot) ? fs.readdirSync(storageRoot) : []) {
    const dir = path.join(storageRoot, ns, FETCHED_DIR);
    if (!fs.existsSync(dir)) continue;
    const snapshots = await kube.list<VMSnapshot>('vmSnapshot', { namespace: ns });
    const live = new Set(snapshots.filter((s) => !s.metadata.deletionTimestamp).map((s) => snapshotFileName(s)));
    for (const name of fetchedEntriesToRemove(dir, fs.readdirSync(dir), live, filesInUse)) {
      const file = path.join(dir, name);
      fs.rmSync(file, { force: true });
      removed.push(file);
    }
  }
  return removed;
}
