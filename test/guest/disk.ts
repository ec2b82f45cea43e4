// Driving the test guest's disk mode (init.c, vmsnap.disk=1) from the host:
// an ext4 image to boot with, commands through <dir>/ctl.sock with answers read
// from <dir>/serial.log (so a VM that some agent launched works too), and the
// disk as the host sees it through its overlay chain.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { guestCommand } from '../../kit/guest.js';
import { poll } from '../../kit/poll.js';

const run = promisify(execFile);

export async function ext4Image(file: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 64 << 20);
  await run('mkfs.ext4', ['-q', '-F', file]);
}

/** Polls a serial log (restored VMs are not our children) for `re` after `from`. */
export async function serial(file: string, re: RegExp, from = 0, timeoutMs = 90_000): Promise<RegExpMatchArray> {
  const text = () => (fs.existsSync(file) ? fs.readFileSync(file, 'latin1').slice(from) : '');
  return poll(`${re} in ${file}`, () => {
    const bad = /VMSNAP BAD.*/.exec(text());
    if (bad) throw new Error(`${file}: ${bad[0]}`);
    return text().match(re);
  }, { timeoutMs, intervalMs: 50, describe: () => `tail: ${text().slice(-500)}` });
}

/** A VM driven through its serial log and its command socket. */
export class Vm {
  constructor(readonly dir: string) {}
  private n = 0;
  get log(): string {
    return path.join(this.dir, 'serial.log');
  }
  offset(): number {
    return fs.existsSync(this.log) ? fs.statSync(this.log).size : 0;
  }
  async command(line: string, answer: RegExp): Promise<RegExpMatchArray> {
    const from = this.offset();
    await guestCommand(this.dir, line);
    return serial(this.log, answer, from);
  }
  async write(name: string): Promise<void> {
    await this.command(`write ${name}`, new RegExp(`VMSNAP DISK WROTE ${name}\\r?\\n`));
  }
  /** The files the guest finds on its disk (caches dropped), each checked against its pattern. */
  async list(): Promise<string[]> {
    const tag = `t${++this.n}`;
    const m = await this.command(`list ${tag}`, new RegExp(`VMSNAP DISK LIST ${tag} (\\S+)\\r?\\n`));
    return m[1] === '-' ? [] : m[1]!.split(',').sort();
  }
  async umount(): Promise<void> {
    await this.command('umount u', /VMSNAP DISK UMOUNTED u\r?\n/);
  }
  /** Waits for two memory sweeps that start after `from`: the pattern survived. */
  async memoryVerifies(from: number): Promise<void> {
    await serial(this.log, /VMSNAP PASS n=\d+ ok\r?\n[^]*VMSNAP PASS n=\d+ ok/, from);
  }
}

/** The disk as a host sees it through the overlay chain: file names, and e2fsck's verdict. */
export async function inspectDisk(image: string): Promise<{ files: string[]; clean: boolean; fsck: string }> {
  const flat = `${image}.flat.raw`;
  await run('qemu-img', ['convert', '-U', '-O', 'raw', image, flat]);
  try {
    const fsck = await run('e2fsck', ['-fn', flat]).then(
      (r) => ({ code: 0, out: r.stdout + r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
    );
    const ls = await run('debugfs', ['-R', 'ls -p /', flat]);
    const files = ls.stdout
      .split('\n')
      .map((l) => l.split('/')[5])
      .filter((n): n is string => !!n && n !== '.' && n !== '..' && n !== 'lost+found')
      .sort();
    return { files, clean: fsck.code === 0, fsck: fsck.out };
  } finally {
    fs.rmSync(flat, { force: true });
  }
}
