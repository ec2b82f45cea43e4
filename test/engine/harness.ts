// Shared pieces of the engine tests: a scratch directory on a real disk, the
// CLI as a child process, and guests booted to a known state.
import { execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { startGuest, type Guest, type GuestOptions } from '../../kit/guest.js';
import { packageRoot } from '../../agent/src/package-root.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { readMappedRamLayout, type RamBlockInfo } from '../../agent/src/snapshot-file/mapped-ram.js';
import { run as runProgram, type RunResult } from '../../stack/run.js';

export const CLI = path.join(packageRoot(), 'bin/vmsnap-agent');

/** A scratch dir on the root filesystem (ext4 here: real O_DIRECT), removed by the caller. */
export function scratchDir(name: string): string {
  const base = process.env.VMSNAP_TEST_DIR ?? path.join(os.tmpdir(), 'vmsnap-tests');
  fs.mkdirSync(base, { recursive: true });
  return fs.mkdtempSync(path.join(base, `${name}-`));
}

export interface CliResult extends RunResult {
  /** With --json and exit 0: the last line of stdout. */
  json?: Record<string, unknown>;
}

export async function cli(args: string[], timeoutMs = 120_000): Promise<CliResult> {
  const r = await runProgram(CLI, args, { timeoutMs });
  if (!args.includes('--json') || r.code !== 0) return r;
  return { ...r, json: JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown> };
}

/** Boots a guest and waits until it has filled its memory and verified it once. */
export async function readyGuest(opts: GuestOptions): Promise<Guest> {
  const guest = await startGuest(opts);
  await guest.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);
  return guest;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export const run = promisify(execFile);

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The first RAM page a snapshot holds: its block, page index and file offset (to damage it on purpose). */
export function firstPresentPage(file: string): { block: RamBlockInfo; page: number; offset: number } {
  const layout = readMappedRamLayout(file, readHeader(file).streamOffset);
  const block = layout.blocks.find((b) => b.pagesPresent > 0);
  if (!block) throw new Error(`${file} holds no RAM pages`);
  const bitmap = Buffer.alloc(Math.ceil(block.pages / 8));
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, bitmap, 0, bitmap.length, block.bitmapOffset);
  } finally {
    fs.closeSync(fd);
  }
  let page = 0;
  while (!((bitmap[page >> 3]! >> (page & 7)) & 1)) page++;
  return { block, page, offset: block.pagesOffset + page * block.pageSize };
}

/** Flips bits (`mask`) of the byte at `offset`. */
export function flipBits(file: string, offset: number, mask = 0x01): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    b[0]! ^= mask;
    fs.writeSync(fd, b, 0, 1, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has ended (at once if it has). */
export async function stopProcess(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
