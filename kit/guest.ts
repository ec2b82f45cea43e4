// The vmsnap test guest: built once (test/guest/build.sh, cached on disk) and booted under QEMU
// TCG. Its /init (test/guest/init.c) fills `fillMiB` MiB with a deterministic pattern and
// re-verifies it every ~200 ms, reporting on the serial console (<dir>/serial.log):
//
//   VMSNAP INFO init_ms=A fill_ms=B     diagnostics (kernel boot, fill time)
//   VMSNAP READY fill_mib=N seed=S      pattern written
//   VMSNAP PASS n=K ok                  sweep K verified every word
//   VMSNAP BAD word=I expected=0x.. got=0x..   sweep K found a mismatch
//   VMSNAP ERROR ...                    /init could not do its job (a module, the disk, the fill)
//
// Lines end in "\r\n" (tty ONLCR).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { poll } from './poll.js';
import { launchQemu, type QemuVm } from './qemu.js';

export interface GuestAssets {
  kernel: string;
  initrd: string;
}

export interface GuestOptions {
  /** Working dir for this guest (qmp.sock, serial.log, qemu.log); created if missing. */
  dir: string;
  /** QEMU -name, default 'guest'. */
  name?: string;
  /** Guest RAM in MiB, default 256. */
  memMiB?: number;
  /** Size of the verified pattern in MiB, default 64. */
  fillMiB?: number;
  /** Pattern seed, default 1. */
  seed?: number;
  /** Back guest RAM with this file (share=on), so a test can read guest RAM from outside. */
  memoryBackendFile?: string;
  /** Add `-incoming defer` (restore target). */
  incomingDefer?: boolean;
  /** Add `-S` (start with the vCPU stopped). */
  paused?: boolean;
  /**
   * Disk mode (init.c `vmsnap.disk=1`): this image becomes /dev/vda (ext4, mounted on /mnt) and
   * <dir>/ctl.sock feeds the guest commands (guestCommand).
   */
  disk?: { path: string; format: 'raw' | 'qcow2' };
  /** Extra kernel command-line words, appended after the defaults. */
  kernelArgs?: string[];
  /** Extra QEMU arguments, appended last. */
  extraArgs?: string[];
  /**
   * The command line a VM pod carries for the vmsnap launcher: no -qmp (the launcher adds its
   * own), and with `serial: 'stdio'` the console on QEMU's stdout (the launcher passes it through).
   */
  pod?: { serial: 'file' | 'stdio' };
}

export interface Guest extends QemuVm {
  serialPath: string;
  /** Full argv including the QEMU binary (the same as `argv`). */
  args: string[];
  /** Polls serial.log until `re` matches the text from `fromOffset` (default 0); rejects on timeout (default 60 s) or when QEMU exits first. */
  waitForSerial(re: RegExp, timeoutMs?: number, fromOffset?: number): Promise<RegExpMatchArray>;
  /** Whole serial log so far (its length is a handy `fromOffset`). */
  serialText(): string;
  /** Highest `VMSNAP PASS n=` seen, 0 if none. */
  lastPass(): number;
  /** Every line that says the guest is broken (badLines). */
  badLines(): string[];
}

/** QEMU binary; override with $VMSNAP_QEMU. */
export const QEMU_BINARY = process.env['VMSNAP_QEMU'] ?? 'qemu-system-x86_64';

/** Kernel command line before the vmsnap.* words; `cryptomgr.notests mitigations=off` trim boot time under TCG. */
export const KERNEL_CMDLINE_BASE = 'console=ttyS0 quiet panic=-1 cryptomgr.notests mitigations=off';

// From the package root, so it is found from the sources and from dist/ alike.
const BUILD_SCRIPT = path.join(packageRoot(), 'test/guest/build.sh');

let assetsPromise: Promise<GuestAssets> | undefined;

/** Runs build.sh once per process (it is itself cached on disk) and parses guest.json. */
export function ensureGuestAssets(): Promise<GuestAssets> {
  assetsPromise ??= buildAssets().catch((err: unknown) => {
    assetsPromise = undefined; // let a later call retry
    throw err;
  });
  return assetsPromise;
}

function buildAssets(): Promise<GuestAssets> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [BUILD_SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code !== 0) return reject(new Error(`test/guest/build.sh failed (${signal ?? `exit ${code}`}):\n${err}${out}`));
      try {
        const jsonPath = out.trim().split('\n').pop()?.trim() ?? '';
        const parsed = JSON.parse(fs.readFileSync(jsonPath, 'utf8')) as Partial<GuestAssets>;
        if (typeof parsed.kernel !== 'string' || typeof parsed.initrd !== 'string') {
          throw new Error(`${jsonPath}: expected {"kernel": string, "initrd": string}`);
        }
        for (const f of [parsed.kernel, parsed.initrd]) if (!fs.existsSync(f)) throw new Error(`guest asset missing: ${f}`);
        resolve({ kernel: parsed.kernel, initrd: parsed.initrd });
      } catch (e) {
        reject(new Error(`test/guest/build.sh: bad output (${String(e)}):\n${out}${err}`));
      }
    });
  });
}

/** Pure: the full QEMU argv (binary first) for a guest. */
export function guestArgs(assets: GuestAssets, opts: GuestOptions): string[] {
  const dir = path.resolve(opts.dir);
  const mem = opts.memMiB ?? 256;
  const diskArgs = opts.disk ? ['vmsnap.disk=1'] : [];
  const append = [KERNEL_CMDLINE_BASE, `vmsnap.fill_mib=${opts.fillMiB ?? 64}`, `vmsnap.seed=${opts.seed ?? 1}`, ...diskArgs, ...(opts.kernelArgs ?? [])].join(' ');
  const args = [
    QEMU_BINARY,
    '-accel', 'tcg',
    '-machine', 'pc',
    '-cpu', 'qemu64',
    '-smp', '1',
    '-m', `${mem}`,
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-no-reboot', // a guest panic ends QEMU instead of silently rebooting
    '-name', opts.name ?? 'guest',
    '-kernel', assets.kernel,
    '-initrd', assets.initrd,
    '-append', append,
    ...(opts.pod?.serial === 'stdio'
      ? ['-serial', 'stdio']
      : ['-chardev', `file,id=serial0,path=${path.join(dir, 'serial.log')},append=on`, '-serial', 'chardev:serial0']),
    ...(opts.pod ? [] : ['-qmp', `unix:${path.join(dir, 'qmp.sock')},server=on,wait=off`]),
  ];
  if (opts.memoryBackendFile !== undefined) {
    args.push(
      '-object', `memory-backend-file,id=pc.ram,size=${mem}M,mem-path=${path.resolve(opts.memoryBackendFile)},share=on`,
      '-machine', 'memory-backend=pc.ram',
    );
  }
  if (opts.disk) {
    args.push(
      '-drive', `file=${path.resolve(opts.disk.path)},format=${opts.disk.format},if=virtio`,
      '-chardev', `socket,id=ctl,path=${path.join(dir, 'ctl.sock')},server=on,wait=off`,
      '-serial', 'chardev:ctl',
    );
  }
  if (opts.incomingDefer) args.push('-incoming', 'defer');
  if (opts.paused) args.push('-S');
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/** A file's text (serial and QEMU logs, read as latin1 so a torn byte cannot throw), or '' while it does not exist. */
export function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch {
    return '';
  }
}

/**
 * Boots a guest and resolves once its QMP socket exists (not once READY: use waitForSerial).
 * A stale serial.log in `dir` is removed first, so one dir is one guest run.
 */
export async function startGuest(opts: GuestOptions): Promise<Guest> {
  const assets = await ensureGuestAssets();
  const dir = path.resolve(opts.dir);
  fs.mkdirSync(dir, { recursive: true });
  const serialPath = path.join(dir, 'serial.log');
  fs.rmSync(serialPath, { force: true });
  const serialText = () => readText(serialPath);
  const context = () => {
    const qemu = readText(path.join(dir, 'qemu.log')).trim();
    const tail = serialText().slice(-2000).trim();
    return (qemu ? `\n  qemu.log:\n${qemu}` : '') + (tail ? `\n  serial.log (tail):\n${tail}` : '');
  };
  const argv = guestArgs(assets, { ...opts, dir });
  const vm = await launchQemu({ argv, qmpPath: path.join(dir, 'qmp.sock'), logPath: path.join(dir, 'qemu.log'), context });
  let gone = false;
  void vm.exited.then(() => (gone = true));
  return {
    ...vm,
    serialPath,
    args: argv,
    serialText,
    async waitForSerial(re: RegExp, timeoutMs = 60_000, fromOffset = 0): Promise<RegExpMatchArray> {
      const plain = new RegExp(re.source, re.flags.replace('g', ''));
      return poll(`${re} on the serial console of guest ${opts.name ?? 'guest'}`, () => {
        const exited = gone; // read before the log, so a last line written before the exit is seen
        const m = serialText().slice(fromOffset).match(plain);
        if (m) return m;
        if (exited) throw new Error(`guest ${opts.name ?? 'guest'}: QEMU exited while waiting for ${re}${context()}`);
        return undefined;
      }, { timeoutMs, intervalMs: 25, describe: context });
    },
    lastPass: () => guestChecks(serialText()).lastPass,
    badLines: () => badLines(serialText()),
  };
}

/**
 * The lines of a guest's console that mean it is broken: a memory mismatch (`VMSNAP BAD`), its
 * /init failing (`VMSNAP ERROR`), or a kernel panic.
 */
export function badLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l.includes('VMSNAP BAD') || l.includes('VMSNAP ERROR') || l.includes('Kernel panic'));
}

/** The numbers of the passing memory sweeps (`VMSNAP PASS n=K ok`) in a console text, in order. */
export function passNumbers(text: string): number[] {
  return [...text.matchAll(/VMSNAP PASS n=(\d+) ok/g)].map((m) => Number(m[1]));
}

export interface GuestChecks {
  /** Highest sweep number that passed, 0 if none. */
  lastPass: number;
  /** How many sweeps passed (grows while the guest runs and verifies). */
  passCount: number;
  bad: string[];
}

/** The guest's memory checks read out of its console text (a serial log, a VM pod's container log). */
export function guestChecks(text: string): GuestChecks {
  const passes = passNumbers(text);
  return { lastPass: Math.max(0, ...passes), passCount: passes.length, bad: badLines(text) };
}

/**
 * The guest's memory check: waits until the serial log, read from character `from`, shows two
 * passing sweeps numbered above `after` and no BAD line; returns the highest. Fails at the first
 * BAD line, naming it.
 */
export async function expectVerifying(serialPath: string, opts: { after?: number; from?: number; timeoutMs?: number } = {}): Promise<number> {
  const after = opts.after ?? 0;
  return poll(`two passing memory checks after n=${after} in ${serialPath}`, () => {
    const text = readText(serialPath).slice(opts.from ?? 0);
    const bad = badLines(text)[0];
    if (bad) throw new Error(`guest memory damaged: ${bad} (${serialPath})`);
    const passes = passNumbers(text).filter((n) => n > after);
    return passes.length >= 2 && Math.max(...passes);
  }, { timeoutMs: opts.timeoutMs ?? 60_000, intervalMs: 200 });
}

/** Sends one disk-mode command line (`write NAME`, `list TAG`, `umount TAG`) to the guest in `dir`; answers appear on its serial log. */
export function guestCommand(dir: string, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path.join(dir, 'ctl.sock'));
    sock.once('error', reject);
    sock.once('connect', () => sock.end(`${line}\n`, () => resolve()));
  });
}
