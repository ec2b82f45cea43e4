// The yardsticks measured in the same run on the same filesystem: fio's
// sequential O_DIRECT I/O with several requests in flight (the disk's limit),
// dd with O_DIRECT (one request in flight, a second column) and QEMU's legacy
// sequential stream.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { QmpClient } from '../agent/src/qmp/client.js';
import { waitForMigration } from '../agent/src/engine/migration.js';
import type { BenchVm } from './qemu-vm.js';

const DD_BLOCK = 4 << 20;

export function dropCaches(): void {
  try {
    execFileSync('sync');
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    // not root: restores of buffered files may then read from the page cache
  }
}

/**
 * Takes one file out of the page cache (its pages are clean after the save's
 * fsync), leaving QEMU's binary and libraries cached as on a node that runs VMs.
 */
export function evictFile(file: string): void {
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

function timed(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/**
 * dd oflag=direct of `bytes` (rounded up to 4 MiB blocks) copied from the VM's
 * RAM file in /dev/shm (the same random bytes: a virtual disk may write zeros
 * faster), with the final fsync like our save.
 */
export function ddWrite(source: string, file: string, bytes: number): number {
  const count = Math.ceil(bytes / DD_BLOCK);
  return timed(() =>
    execFileSync('dd', [`if=${source}`, `of=${file}`, `bs=${DD_BLOCK}`, `count=${count}`, 'oflag=direct', 'conv=fsync'], { stdio: 'ignore' }),
  );
}

export function ddRead(file: string): number {
  dropCaches();
  return timed(() => execFileSync('dd', [`if=${file}`, 'of=/dev/null', `bs=${DD_BLOCK}`, 'iflag=direct'], { stdio: 'ignore' }));
}

/**
 * The pause before every timed restore, for every side of a comparison: memory freed just before
 * (the previous restore's QEMU, the evicted file) is cheaper to touch again until the kernel has
 * handed it back (free page reporting takes seconds), so a side restoring sooner would win on that.
 */
export const RESTORE_PAUSE_MS = Number(process.env['VMSNAP_BENCH_RESTORE_PAUSE_MS'] ?? 5000);

export { sleep } from '../kit/poll.js';

/** fio's block size and requests in flight: QEMU's multifd channels move up to 1 MiB per request. */
export const FIO_BLOCK = 1 << 20;
export const FIO_IODEPTH = 8;

/** Installs fio (Debian's package) when it is missing: the bench's limit is fio's, never a guess. */
export function ensureFio(): void {
  try {
    execFileSync('fio', ['--version'], { stdio: 'ignore' });
  } catch {
    execFileSync('bash', [path.join(packageRoot(), 'scripts/ensure-fio.sh')], { stdio: 'inherit' });
  }
}

function fio(rw: 'write' | 'read', file: string, bytes: number): number {
  const size = Math.ceil(bytes / FIO_BLOCK) * FIO_BLOCK;
  const out = execFileSync(
    'fio',
    [
      '--name=vmsnap-limit', `--filename=${file}`, `--rw=${rw}`, `--bs=${FIO_BLOCK}`, `--iodepth=${FIO_IODEPTH}`,
      '--ioengine=libaio', '--direct=1', `--size=${size}`, '--numjobs=1', '--output-format=json',
      // The write fsyncs at the end like a save, on random data like the bench VMs' RAM.
      ...(rw === 'write' ? ['--end_fsync=1', '--refill_buffers=1'] : []),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const job = (JSON.parse(out) as { jobs: Array<Record<'read' | 'write', { io_bytes: number; runtime: number }>> }).jobs[0]!;
  const { io_bytes: ioBytes, runtime } = job[rw];
  if (!(ioBytes > 0) || !(runtime > 0)) throw new Error(`fio --rw=${rw} on ${file} moved no data`);
  return (ioBytes / (1 << 20)) / (runtime / 1000);
}

/** MiB/s of fio's sequential O_DIRECT write of `bytes` (1 MiB blocks, FIO_IODEPTH in flight) into `file`. */
export function fioWrite(file: string, bytes: number): number {
  return fio('write', file, bytes);
}

/** MiB/s of fio's sequential O_DIRECT read of `bytes` of `file` (written by fioWrite). */
export function fioRead(file: string, bytes: number): number {
  dropCaches();
  return fio('read', file, bytes);
}

async function migrateLegacy(vm: BenchVm, command: 'migrate' | 'migrate-incoming', uri: string): Promise<number> {
  const c = await QmpClient.connect(vm.qmp);
  try {
    await c.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    if (command === 'migrate') await c.execute('migrate-set-parameters', { 'max-bandwidth': 0 });
    const started = Date.now();
    await c.execute(command, { uri });
    const info = await waitForMigration(c, { pollMs: 10, startedAt: started });
    if (info.status !== 'completed') throw new Error(`legacy ${command} ${info.status}: ${info['error-desc']}`);
    return Date.now() - started;
  } finally {
    c.close();
  }
}

/** QEMU's plain `file:` migration: one sequential stream, no mapped-ram, no multifd; then fsync. */
export async function legacySave(vm: BenchVm, file: string): Promise<number> {
  const ms = await migrateLegacy(vm, 'migrate', `file:${file}`);
  return ms + timed(() => execFileSync('sync', [file]));
}

export async function legacyRestore(vm: BenchVm, file: string): Promise<number> {
  dropCaches();
  return migrateLegacy(vm, 'migrate-incoming', `file:${file}`);
}
