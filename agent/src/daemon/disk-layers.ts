// After a VMSnapshot's file was deleted (deletionPolicy Delete): the disk layer
// its save added to the VM's chain is merged back, so chains stay as long as
// the number of live snapshots, not of snapshots ever taken. Never when
// anything else is built on the frozen base: another snapshot's chain, or an
// overlay of a restored VM (a copy) in a VM directory or beside the disk.
import fs from 'node:fs';
import path from 'node:path';
import type { VMSnapshot } from '../../../api/index.js';
import { layersOn, mergeIntoBase, qcow2Backing } from '../engine/disk-merge.js';
import type { DiskRecord } from '../engine/disks.js';
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
        for (const d of readHeader(path.join(dir, f)).metadata.disks ?? []) for (const i of chainOf(d.base)) images.add(i);
      } catch {
        // unreadable or partial: it holds no promise to keep
      }
    }
  }
  return images;
}

/** Pure enough to test: why `rec.base` must stay as it is, or undefined when it may be merged into. */
export function baseInUse(rec: DiskRecord, snapshotImages: ReadonlySet<string>, dirs: string[]): string | undefined {
  if (snapshotImages.has(path.resolve(rec.base))) return `another snapshot needs ${rec.base}`;
  const users = layersOn(rec.base, dirs, rec.overlay ? [rec.overlay] : []);
  if (users.length > 0) return `${users.join(', ')} ${users.length === 1 ? 'is' : 'are'} built on ${rec.base}`;
  return undefined;
}

export async function mergeLayersOfDeleted(ctx: AgentContext, snap: VMSnapshot, meta: SnapshotMetadata): Promise<void> {
  const recs = (meta.disks ?? []).filter((d) => d.overlay);
  if (recs.length === 0) return;
  const ns = snap.metadata.namespace!;
  const vmName = snap.spec.vmName;
  const keep = (why: string) => ctx.events.record(snap, 'Normal', 'DiskLayersKept', `the disk layers of this snapshot stay: ${why}`);
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
        for (const rec of recs) {
          const why = baseInUse(rec, images, dirs);
          if (why) {
            await keep(why);
            continue;
          }
          await mergeIntoBase(client, rec);
          merged.push(`${rec.overlay} into ${rec.base}`);
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
