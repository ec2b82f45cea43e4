// Keeps disk chains short. Every snapshot of a running VM adds a layer (the VM
// continues on an overlay of the frozen base; a restored VM runs on an overlay
// of it). When that snapshot is deleted and nothing else depends on its base,
// the VM's layer above the base is merged back into it (an active block-commit
// that pivots the running VM) and the layer's file goes: the VM is back on the
// image it had before the snapshot.
import fs from 'node:fs';
import path from 'node:path';
import type { QmpClient } from '../qmp/client.js';
import { writableDisks, type BlockInfo } from './disks.js';
import { openRegular } from './private-files.js';
import type { OverlayLedger } from './overlay-ledger.js';
import { VmsnapError } from '../errors.js';

const QCOW2_MAGIC = 0x514649fb;

/** The backing file a qcow2 image names (absolute, as vmsnap creates them), or undefined. */
export function qcow2Backing(file: string): string | undefined {
  let fd: number | undefined;
  try {
    // Names in VM directories are the tenant's: symlinks, sockets, FIFOs and devices are never opened.
    fd = openRegular(file, fs.constants.O_RDONLY);
    if (fd === undefined) return undefined;
    const head = Buffer.alloc(20);
    if (fs.readSync(fd, head, 0, 20, 0) < 20 || head.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
    const offset = Number(head.readBigUInt64BE(8));
    const size = head.readUInt32BE(16);
    if (offset === 0 || size === 0 || size > 4096) return undefined;
    const name = Buffer.alloc(size);
    fs.readSync(fd, name, 0, size, offset);
    const backing = name.toString('utf8');
    return path.resolve(path.dirname(file), backing);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** qcow2 files in `dirs` (not recursive) built on `base`, other than `except`. */
export function layersOn(base: string, dirs: string[], except: string[] = []): string[] {
  const skip = new Set(except.map((p) => path.resolve(p)));
  const found = new Set<string>();
  for (const dir of new Set(dirs)) {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      const f = path.join(dir, n);
      if (!skip.has(f) && qcow2Backing(f) === path.resolve(base)) found.add(f);
    }
  }
  return [...found];
}

export class MergeError extends VmsnapError {
  override name = 'MergeError';
}

interface BlockJob {
  device: string;
  type: string;
  ready: boolean;
  status?: string;
  error?: string;
}

interface NamedNode {
  'node-name': string;
  file: string;
  drv: string;
}

/** What mergeIntoBase needs: the VM's top layer `top`, directly above `base`. */
export interface MergeTarget {
  device: string;
  base: string;
  baseFormat: string;
  top: string;
}

/** The names vmsnap gives its layers (a freeze's or a restore's overlay); a cheap first filter, never a reason to delete (the ledger is). */
export const VMSNAP_LAYER = /\.vmsnap-[0-9a-z]+\.qcow2$/;

/**
 * Merges the VM's active layer `top` into `base` and pivots the running VM
 * onto the base, then deletes `top`. Only when `top` is an overlay the agent's
 * ledger records, unchanged (`top` comes from the tenant's query-block), and
 * the VM still runs on it directly above `base`; the caller has checked nobody
 * else uses either.
 */
export async function mergeIntoBase(client: QmpClient, t: MergeTarget, ledger: OverlayLedger, timeoutMs = 600_000): Promise<void> {
  const notOurs = ledger.whyNotOwned(t.top);
  if (notOurs) throw new MergeError(`disk ${t.device}: ${notOurs}; it is not merged away`);
  const disk = writableDisks(await client.execute<BlockInfo[]>('query-block')).find((d) => d.chain[0]?.filename === t.top);
  if (!disk || disk.chain[1]?.filename !== t.base) {
    throw new MergeError(`disk ${t.device}: the VM no longer runs on ${t.top} directly above ${t.base}`);
  }
  const nodes = await client.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
  const baseNode = nodes.find((n) => n.file === t.base && n.drv === t.baseFormat);
  if (!baseNode) throw new MergeError(`disk ${t.device}: QEMU has no ${t.baseFormat} node for ${t.base}`);
  const jobId = `vmsnap-merge-${Date.now().toString(36)}`;
  await client.execute('block-commit', {
    'job-id': jobId,
    device: disk.device || disk.nodeName,
    'base-node': baseNode['node-name'],
  });
  const job = async () => (await client.execute<BlockJob[]>('query-block-jobs')).find((j) => j.device === jobId);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = await job();
    if (!j) throw new MergeError(`disk ${t.device}: the merge job ended before it was ready`);
    if (j.ready) break;
    if (j.error) throw new MergeError(`disk ${t.device}: merge failed: ${j.error}`);
    if (Date.now() > deadline) {
      // Cancelled before the pivot, the VM stays on its overlay: nothing lost.
      await client.execute('block-job-cancel', { device: jobId }).catch(() => undefined);
      throw new MergeError(`disk ${t.device}: the merge was not ready within ${timeoutMs} ms; cancelled`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await client.execute('block-job-complete', { device: jobId });
  while (await job()) {
    if (Date.now() > deadline) throw new MergeError(`disk ${t.device}: the merge did not finish within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const after = writableDisks(await client.execute<BlockInfo[]>('query-block')).find((d) => d.chain[0]?.filename === t.base);
  if (!after) throw new MergeError(`disk ${t.device}: after the merge the VM does not run on ${t.base}`);
  const removal = ledger.remove(t.top);
  if (!removal.removed) throw new MergeError(`disk ${t.device}: merged into ${t.base}, but ${t.top} stays: ${removal.why}`);
}
