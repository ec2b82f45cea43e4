// What freezing the disks adds to a snapshot's pause: the same running VM
// (random RAM) saved with and without a writable disk, interleaved, medians.
// The disk is a large sparse raw image with data in it: the freeze creates a
// qcow2 overlay (metadata only), so its cost must not grow with the disk.
import fs from 'node:fs';
import path from 'node:path';
import { randomFillSync } from 'node:crypto';
import { saveVm } from '../agent/src/engine/save.js';
import { fillRandom, startBenchVm } from './qemu-vm.js';
import { qmpExecute } from '../kit/qemu.js';

export interface DiskPauseRow {
  mode: 'Paused' | 'Live';
  ramGiB: number;
  diskGiB: number;
  /** Median pause (Paused: stop to cont; Live: QEMU's downtime) without and with the disk. */
  pausedMsNoDisk: number;
  pausedMsDisk: number;
  extraPauseMs: number;
  /** Median time of the freeze itself (the blockdev-snapshot-sync transaction). */
  diskFreezeMs: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function sparseDisk(file: string, bytes: number, dataBytes: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, bytes);
    const block = Buffer.alloc(16 << 20);
    const step = Math.floor(bytes / (dataBytes / block.length));
    for (let off = 0; off + block.length <= bytes && off / step < dataBytes / block.length; off += step) {
      randomFillSync(block);
      fs.writeSync(fd, block, 0, block.length, off);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export async function measureDiskPause(opts: { dir: string; ramGiB: number; diskGiB: number; reps: number; log: (l: string) => void }): Promise<DiskPauseRow[]> {
  const dir = path.join(opts.dir, 'disks');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const memFile = path.join('/dev/shm', `vmsnap-bench-disks-${process.pid}.ram`);
  const ramBytes = opts.ramGiB * 2 ** 30;
  const rows: DiskPauseRow[] = [];
  try {
    fillRandom(memFile, ramBytes);
    for (const mode of ['Paused', 'Live'] as const) {
      const paused: Record<'off' | 'on', number[]> = { off: [], on: [] };
      const freezes: number[] = [];
      for (let i = 0; i < opts.reps; i++) {
        for (const withDisk of [false, true]) {
          const disk = path.join(dir, 'disk.raw');
          if (withDisk) sparseDisk(disk, opts.diskGiB * 2 ** 30, 256 << 20);
          const vm = await startBenchVm({
            dir,
            name: 'vm',
            ramBytes,
            memFile,
            extraArgs: withDisk ? ['-drive', `file=${disk},format=raw,if=virtio`] : [],
          });
          try {
            await qmpExecute(vm.qmp, 'cont');
            const out = path.join(dir, 'vm.vms');
            const r = await saveVm({ qmpSocket: vm.qmp, outPath: out, channels: 4, directIO: 'auto', after: 'resume', live: mode === 'Live', overwrite: true });
            if (withDisk && r.disks.length !== 1) throw new Error(`bench: expected one frozen disk, got ${r.disks.length}`);
            paused[withDisk ? 'on' : 'off'].push(r.vmPausedMs);
            if (withDisk) freezes.push(r.diskFreezeMs);
            opts.log(`  disks ${mode} run ${i + 1} ${withDisk ? 'with' : 'without'} disk: paused ${Math.round(r.vmPausedMs)} ms${withDisk ? `, freeze ${r.diskFreezeMs.toFixed(1)} ms` : ''}`);
          } finally {
            await vm.stop();
            for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f), { force: true });
          }
        }
      }
      const off = median(paused.off);
      const on = median(paused.on);
      rows.push({
        mode,
        ramGiB: opts.ramGiB,
        diskGiB: opts.diskGiB,
        pausedMsNoDisk: Math.round(off),
        pausedMsDisk: Math.round(on),
        extraPauseMs: Math.round(on - off),
        diskFreezeMs: Math.round(median(freezes) * 10) / 10,
      });
    }
  } finally {
    fs.rmSync(memFile, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
