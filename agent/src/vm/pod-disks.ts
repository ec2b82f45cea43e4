// Writable disks of VM pods. The pod's QEMU does every file operation, as the pod's user inside
// its sandbox, driven over QMP: at save time `blockdev-snapshot-sync` makes it create a qcow2
// overlay beside the disk's current image and continue on it (that image is the snapshot's frozen
// layer); for a restore its launcher starts QEMU on the frozen layer and QEMU, before loading the
// snapshot, creates a fresh overlay on it the same way. The agent never opens, creates, stats or
// deletes these paths: they are names in the pod's own mount namespace, recorded in the header
// (which the agent MACs) and checked here to be plain absolute paths beneath a writable volume
// of the pod. Layers of deleted snapshots stay in the pod's volume: the agent merges nothing for
// VM pods (see the README's VM pods section).
import path from 'node:path';
import { PodImagePathSchema, type DiskSwap } from '../../../api/vm-pod.js';
import { argvImagePath, DiskError, overlayPath, snapshotOnto, writableDisks, type BlockInfo, type DiskFreezer, type DiskRecord, type WritableDisk } from '../engine/disks.js';
import type { QmpClient } from '../qmp/client.js';

/** Why `image` (a path the pod's QEMU names) is not a disk image a VM pod's snapshot may record, or undefined. */
export function podImageProblem(image: string, volumes: readonly string[]): string | undefined {
  const parsed = PodImagePathSchema.safeParse(image);
  if (!parsed.success) return `${JSON.stringify(image.slice(0, 200))} is not ${parsed.error.issues[0]?.message ?? 'a plain absolute path'}`;
  const roots = volumes.map((v) => path.posix.normalize(v).replace(/\/+$/, '')).filter((v) => v !== '');
  if (!roots.some((root) => image.startsWith(root + '/'))) {
    return `${image} does not lie beneath a writable volume of the pod (${roots.join(', ') || 'none'}): keep writable disk images on a volume mounted read-write`;
  }
  return undefined;
}

function diskName(d: WritableDisk): string {
  return (d.device || d.qdev || d.nodeName || '?').slice(0, 64);
}

/** Pure: the record of a pod disk whose current image becomes the base. Paths stay the pod's; nothing is looked at. */
export function podDiskRecord(d: WritableDisk, argv: string[]): DiskRecord {
  const base = d.chain[0]!;
  return {
    device: diskName(d),
    argvPath: argvImagePath(argv, d),
    base: base.filename,
    baseFormat: base.format,
    virtualSize: d.virtualSize,
    chain: d.chain.map((c) => c.filename),
  };
}

/** Refuses a disk whose images are not plain paths in the pod's writable volumes (throws DiskError). */
function checkPodDisk(d: WritableDisk, argv: string[], volumes: readonly string[]): void {
  for (const { filename } of d.chain) {
    const problem = podImageProblem(filename, volumes);
    if (problem) throw new DiskError(`disk ${diskName(d)}: its image ${problem}`);
  }
  // The launcher finds the disk in its command line by the chain: one of its images must be named there.
  argvImagePath(argv, d);
}

/** The save's disk freeze for a VM pod whose writable volumes are mounted at `volumes` (paths in the pod). */
export function podDiskFreezer(volumes: readonly string[]): DiskFreezer {
  return {
    check(disks, vm) {
      for (const d of disks) checkPodDisk(d, vm.argv, volumes);
    },
    records: (disks, argv) => disks.map((d) => podDiskRecord(d, argv)),
    async freeze(client, disks, argv) {
      const records = disks.map((d) => {
        const r = podDiskRecord(d, argv);
        return { ...r, overlay: overlayPath(path.posix.dirname(r.base), r.argvPath) };
      });
      try {
        await snapshotOnto(client, disks.map((d, i) => ({ disk: d, overlay: records[i]!.overlay })));
      } catch (err) {
        // Nothing to undo here: the transaction moved no disk, and a file QEMU may have made is the pod's.
        throw new DiskError(`could not freeze the VM pod's disks: ${(err as Error).message}`);
      }
      return records;
    },
  };
}

/**
 * Pure: why a snapshot's disk records cannot be restored into a VM pod with these writable
 * volumes, or undefined. The header is the agent's own (MACed), checked again all the same: the
 * pod's volumes may have changed since, and these paths go to the pod's launcher.
 */
export function podDiskRefusal(records: readonly DiskRecord[], volumes: readonly string[]): string | undefined {
  for (const r of records) {
    const device = String(r.device).slice(0, 64);
    if (!r.chain || r.chain.length === 0 || r.chain[0] !== r.base) {
      return `disk ${device} was frozen by a save on the host, not in a VM pod (its record has no image chain): restore it with the node CLI`;
    }
    for (const image of r.chain) {
      const problem = podImageProblem(image, volumes);
      if (problem) return `disk ${device}: the snapshot's image ${problem}`;
    }
  }
  return undefined;
}

/** Pure: what the launcher's restart-incoming needs to start each disk on its frozen layer. */
export function diskSwaps(records: readonly DiskRecord[]): DiskSwap[] {
  return records.map((r) => ({ chain: [...(r.chain ?? [r.base])] }));
}

/**
 * In a QEMU the launcher started on the frozen layers (-incoming defer, nothing loaded yet): each
 * disk moves onto a fresh overlay that QEMU creates beside its frozen layer, so the restored VM
 * never writes the snapshot's state. Returns the overlays (paths in the pod).
 */
export async function startOnRestoreOverlays(client: QmpClient, records: readonly DiskRecord[]): Promise<string[]> {
  const disks = writableDisks(await client.execute<BlockInfo[]>('query-block'));
  const moves = records.map((r) => {
    const disk = disks.find((d) => d.chain[0]?.filename === r.base);
    if (!disk) {
      throw new DiskError(
        `disk ${String(r.device).slice(0, 64)}: the restarted QEMU does not run it on the snapshot's frozen layer ${r.base} ` +
          `(its writable disks are on ${disks.map((d) => d.chain[0]?.filename).join(', ') || 'nothing'})`,
      );
    }
    return { disk, overlay: overlayPath(path.posix.dirname(r.base), r.argvPath) };
  });
  try {
    await snapshotOnto(client, moves);
  } catch (err) {
    throw new DiskError(`could not start the restored VM pod's disks on fresh overlays: ${(err as Error).message}`);
  }
  return moves.map((m) => m.overlay);
}
