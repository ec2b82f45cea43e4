// Bench VMs: QEMU that never runs guest code (-S) with RAM backed by a file
// in /dev/shm pre-filled with random bytes, so a save writes every page;
// and empty targets waiting with -incoming defer.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { QmpClient } from '../agent/src/qmp/client.js';

export interface BenchVm {
  qmp: string;
  process: ChildProcess;
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
  fs.rmSync(qmp, { force: true });
  const mib = opts.ramBytes / (1 << 20);
  const args = ['-accel', 'tcg', '-machine', 'pc', '-m', `${mib}M`, '-nodefaults', '-no-user-config', '-display', 'none', '-S'];
  if (opts.memFile) {
    args.push('-object', `memory-backend-file,id=pc.ram,size=${mib}M,mem-path=${opts.memFile},share=on`, '-machine', 'memory-backend=pc.ram');
  }
  args.push('-qmp', `unix:${qmp},server=on,wait=off`);
  if (opts.incoming) args.push('-incoming', 'defer');
  args.push(...(opts.extraArgs ?? []));
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const deadline = Date.now() + 20_000;
  while (!fs.existsSync(qmp)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`bench QEMU ${opts.name} did not start`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return {
    qmp,
    process: child,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export async function qmpExecute<T>(socket: string, command: string, args: Record<string, unknown> = {}): Promise<T> {
  const c = await QmpClient.connect(socket);
  try {
    return await c.execute<T>(command, args);
  } finally {
    c.close();
  }
}
