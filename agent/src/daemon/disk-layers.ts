// After a VMSnapshot's file was deleted (deletionPolicy Delete): the VM's layer
// right above the snapshot's frozen base (the freeze's overlay, or the overlay
// a restore of it started the VM on) is merged back into the base, so chains
// stay as long as the number of live snapshots, not of snapshots ever taken.
// Never when anything else needs the base or that layer: another snapshot's
// chain, or an overlay of a restored VM in a VM directory or beside the disk.
import fs from 'node:fs';
import path from 'node:path';
import type { VMSnapshot } from '../../../api/index.js';
import { layersOn, mergeIntoBase, qcow2Backing, VMSNAP_LAYER, writableDisks, OverlayLedger, type BlockInfo } from '../engine/index.js';
import { QmpClient } from '../qmp/client.js';
import { readHeader } from '../snapshot-file/read.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';
import type { AgentContext } from './context.js';
import { vmKey } from './vm-locks.js';

/** Subdirectories `root/*` and `root/*\/*` (VM directories under vmRoot). */
function vmDirs(vmRoot: string): string[] {
  const sub = (d: string) => {
    try {
      return fs.readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => path.join(d, e.name));
    } catch {
      return [];
    }
  };
  return sub(vmRoot).flatMap(sub);
}

/** The image and its backing files, following qcow2 headers (bounded). */
function chainOf(image: string): string[] {
  const out = [path.resolve(image)];
  for (let next = qcow2Backing(image); next && out.length < 64; next = qcow2Backing(next)) out.push(next);
  return out;
}

/** Every disk image the snapshot files under `storageRoot` need (their bases with their chains). */
function imagesOfSnapshots(storageRoot: string): Set<string> {
  const images = new Set<string>();
  for (const nsDir of fs.readdirSync(storageRoot, { withFileTypes: true }).filter((e) => e.isDirectory())) {
    const dir = path.join(storageRoot, nsDir.name);
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.vms'))) {
      try {
        // Without the key on purpose: what a header names is only ever kept, never deleted.
        for (const d of readHeader(path.join(dir, f)).metadata.disks ?? []) for (const i of chainOf(d.base)) images.add(i);
      } catch {
        // unreadable or partial: it holds no promise to keep
      }
    }
  }
  return images;
}

/** Why `image` must stay as it is (a snapshot needs it, or a layer other than `except` is built on it), or undefined. */
export function imageInUse(image: string, snapshotImages: ReadonlySet<string>, dirs: string[], except: string[]): string | undefined {
  if (snapshotImages.has(path.resolve(image))) return `a snapshot needs ${image}`;
  const users = layersOn(image, dirs, except);
  if (users.length > 0) return `${users.join(', ')} ${users.length === 1 ? 'is' : 'are'} built on ${image}`;
  return undefined;
}

export async function mergeLayersOfDeleted(ctx: AgentContext, snap: VMSnapshot, meta: SnapshotMetadata): Promise<void> {
  const recs = meta.disks ?? [];
  if (recs.length === 0) return;
  const ns = snap.metadata.namespace!;
  const vmName = snap.spec.vmName;
  const keep = (why: string) => ctx.events.record(snap, 'Normal', 'DiskLayersKept', `the disk layers of this snapshot stay: ${why}`);
  // A VM pod's layers are files in the pod's own volumes, made by its QEMU: the agent never merges or deletes them.
  if (ctx.discovery.source === 'pods') {
    return await keep("they are files in the VM pod's own volume, which the agent never merges or deletes; they go with the volume, or the VM's owner removes layers no snapshot or running VM needs");
  }
  try {
    const vm = await ctx.discovery.find(ns, vmName);
    if (!vm) return await keep(`VM ${ns}/${vmName} is not running on node ${ctx.nodeName}`);
    const release = await ctx.locks.acquire(vmKey(ns, vmName), 'disk-merge', 60_000);
    if (!release) return await keep(`VM ${ns}/${vmName} stayed busy`);
    try {
      const images = imagesOfSnapshots(ctx.config.storageRoot);
      const dirs = [...vmDirs(ctx.config.vmRoot), ...recs.flatMap((r) => [path.dirname(r.base), path.dirname(r.argvPath)])];
      const merged: string[] = [];
      const client = await QmpClient.connect(vm.qmpSocket);
      try {
        const disks = writableDisks(await client.execute<BlockInfo[]>('query-block'));
        for (const rec of recs) {
          // The VM's layer right above the base: the freeze's overlay, or a restore's.
          const top = disks.find((d) => d.chain[1]?.filename === rec.base)?.chain[0]?.filename;
          const why = !top
            ? `VM ${ns}/${vmName} no longer runs directly above ${rec.base}`
            : (imageInUse(rec.base, images, dirs, [top]) ?? imageInUse(top, images, dirs, []));
          if (why) {
            await keep(why);
            continue;
          }
          await mergeIntoBase(client, { device: rec.device, base: rec.base, baseFormat: rec.baseFormat, top: top! }, OverlayLedger.forStorageRoot(ctx.config.storageRoot));
          merged.push(`${top} into ${rec.base}`);
        }
      } finally {
        client.close();
      }
      if (merged.length > 0) {
        await ctx.events.record(snap, 'Normal', 'DiskLayersMerged', `VM ${ns}/${vmName} runs on its earlier image again: merged ${merged.join('; ')}`);
      }
    } finally {
      release();
    }
  } catch (err) {
    ctx.log.warn({ err: String(err), namespace: ns, vm: vmName }, 'disk layers not merged');
    await keep((err as Error).message).catch(() => undefined);
  }
}

/** The top image of each writable disk of a VM (taken before a restore replaces it). */
export async function topLayers(client: QmpClient): Promise<string[]> {
  return writableDisks(await client.execute<BlockInfo[]>('query-block')).map((d) => d.chain[0]!.filename);
}

/**
 * After a restore replaced a running VM (ifRunning: Replace): the layers vmsnap
 * had started it on are its discarded state. Each one nothing else needs is
 * deleted, so it neither leaks nor pins its base; returns what was removed.
 * `tops` is what the replaced QEMU reported: only the agent's own overlays,
 * unchanged since it recorded them in its ledger, are candidates.
 */
export function dropReplacedLayers(ctx: AgentContext, tops: string[]): string[] {
  const ledger = OverlayLedger.forStorageRoot(ctx.config.storageRoot);
  const candidates = tops.filter((t) => VMSNAP_LAYER.test(t) && ledger.owns(t));
  if (candidates.length === 0) return [];
  const images = imagesOfSnapshots(ctx.config.storageRoot);
  const dirs = [...vmDirs(ctx.config.vmRoot), ...candidates.map((t) => path.dirname(t))];
  const removed: string[] = [];
  for (const t of candidates) {
    if (imageInUse(t, images, dirs, []) !== undefined) continue;
    if (ledger.remove(t).removed) removed.push(t);
  }
  return removed;
}
