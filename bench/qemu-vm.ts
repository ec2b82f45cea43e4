// Bench VMs: QEMU that never runs guest code (-S) with RAM backed by a file
// in /dev/shm pre-filled with random bytes and mapped up front, so a save writes every page;
// and empty targets waiting with -incoming defer.
import { readHeader } from '../agent/src/snapshot-file/read.js';
import { writeHeader } from '../agent/src/snapshot-file/header.js';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { launchQemu, type QemuVm } from '../kit/qemu.js';

export interface BenchVm extends QemuVm {
  qmp: string;
  stop(): Promise<void>;
}

/** Writes `bytes` of random content (a random 64 MiB block repeated: no page is zero or alike). */
export function fillRandom(file: string, bytes: number): void {
  const block = Buffer.alloc(64 << 20);
  randomFillSync(block);
  const fd = fs.openSync(file, 'w');
  try {
    for (let off = 0; off < bytes; off += block.length) {
      // Vary each 64 MiB repeat so pages differ across the file.
      block.writeUInt32LE(off / block.length, 0);
      fs.writeSync(fd, block, 0, Math.min(block.length, bytes - off), off);
    }
  } finally {
    fs.closeSync(fd);
  }
}

export async function startBenchVm(opts: { dir: string; name: string; ramBytes: number; memFile?: string; incoming?: boolean; extraArgs?: string[] }): Promise<BenchVm> {
  const qmp = path.join(opts.dir, `${opts.name}.sock`);
  const mib = opts.ramBytes / (1 << 20);
  const argv = ['qemu-system-x86_64', '-accel', 'tcg', '-machine', 'pc', '-m', `${mib}M`, '-nodefaults', '-no-user-config', '-display', 'none', '-S'];
  if (opts.memFile) {
    // prealloc maps every page of the file into QEMU up front (without changing a byte), as a running
    // guest has its RAM mapped: else the save's channels would fault each page in (about 1 s of CPU
    // per GiB here), a cost no real VM's save pays.
    argv.push('-object', `memory-backend-file,id=pc.ram,size=${mib}M,mem-path=${opts.memFile},share=on,prealloc=on`, '-machine', 'memory-backend=pc.ram');
  }
  argv.push('-qmp', `unix:${qmp},server=on,wait=off`);
  if (opts.incoming) argv.push('-incoming', 'defer');
  argv.push(...(opts.extraArgs ?? []));
  const vm = await launchQemu({ argv, qmpPath: qmp });
  return { ...vm, qmp, stop: () => vm.kill('SIGKILL') };
}

/**
 * Makes a snapshot of a bench VM restore like one of a VM started with plain
 * `-m` RAM: its recorded command line loses the random file that stood in for
 * the RAM's content (the only quick way to fill GiBs of guest RAM without a
 * guest). Launched restores then get anonymous RAM, as the product's VMs do.
 */
export function recordPlainRam(file: string): void {
  const header = readHeader(file);
  const argv = header.metadata.qemu.argv;
  const plain: string[] = [argv[0]!];
  for (let i = 1; i < argv.length; i++) {
    if (argv[i] === '-object' && argv[i + 1]!.startsWith('memory-backend-file,id=pc.ram,')) i++;
    else if (argv[i] === '-machine' && argv[i + 1] === 'memory-backend=pc.ram') i++;
    else plain.push(argv[i]!);
  }
  const fd = fs.openSync(file, 'r+');
  try {
    writeHeader(fd, header.state, { ...header.metadata, qemu: { ...header.metadata.qemu, argv: plain } });
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
