// Test guest helper: builds (once, cached) and boots the vmsnap test guest
// under QEMU TCG. The guest's /init (init.c) fills `fillMiB` MiB with a
// deterministic pattern and re-verifies it every ~200 ms, reporting on the
// serial console, which QEMU writes to <dir>/serial.log:
//
//   VMSNAP INFO init_ms=A fill_ms=B     diagnostics (kernel boot, fill time)
//   VMSNAP READY fill_mib=N seed=S      pattern written
//   VMSNAP PASS n=K ok                  sweep K verified every word
//   VMSNAP BAD word=I expected=0x.. got=0x..   sweep K found a mismatch
//
// Lines end in "\r\n" (tty ONLCR).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { packageRoot } from '../../agent/src/package-root.js';

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
  /**
   * Back guest RAM with this file (share=on) so a test can read/hash guest
   * RAM from outside: -object memory-backend-file,id=pc.ram,... -machine memory-backend=pc.ram
   */
  memoryBackendFile?: string;
  /** Add `-incoming defer` (restore target). */
  incomingDefer?: boolean;
  /** Add `-S` (start with the vCPU stopped). */
  paused?: boolean;
  /**
   * Disk mode (init.c `vmsnap.disk=1`): this image becomes /dev/vda (ext4,
   * mounted on /mnt) and <dir>/ctl.sock feeds the guest commands (guestCommand).
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

export interface Guest {
  qmpPath: string;
  serialPath: string;
  pid: number;
  /** Full argv including the QEMU binary. */
  args: string[];
  process: ChildProcess;
  /**
   * Polls serial.log until `re` matches the text from character `fromOffset`
   * (default 0). Rejects on timeout (default 60 s) or when QEMU exits first.
   */
  waitForSerial(re: RegExp, timeoutMs?: number, fromOffset?: number): Promise<RegExpMatchArray>;
  /** Whole serial log so far (its length is a handy `fromOffset`). */
  serialText(): string;
  /** Highest `VMSNAP PASS n=` seen, 0 if none. */
  lastPass(): number;
  /** Every `VMSNAP BAD ...` line seen (without the line ending). */
  badLines(): string[];
  /** Sends `signal` (default SIGTERM; SIGKILL after 5 s) and waits for exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Resolves with QEMU's exit code (null if it died of a signal). */
  exited: Promise<number | null>;
}

/** QEMU binary; override with $VMSNAP_QEMU. */
export const QEMU_BINARY = process.env['VMSNAP_QEMU'] ?? 'qemu-system-x86_64';

/**
 * Kernel command line before the vmsnap.* words. `cryptomgr.notests` and
 * `mitigations=off` trim a few hundred ms of boot under TCG.
 */
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
      if (code !== 0) {
        reject(new Error(`test/guest/build.sh failed (${signal ?? `exit ${code}`}):\n${err}${out}`));
        return;
      }
      try {
        const jsonPath = out.trim().split('\n').pop()?.trim() ?? '';
        const parsed = JSON.parse(fs.readFileSync(jsonPath, 'utf8')) as Partial<GuestAssets>;
        if (typeof parsed.kernel !== 'string' || typeof parsed.initrd !== 'string') {
          throw new Error(`${jsonPath}: expected {"kernel": string, "initrd": string}`);
        }
        for (const f of [parsed.kernel, parsed.initrd]) {
          if (!fs.existsSync(f)) throw new Error(`guest asset missing: ${f}`);
        }
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
  const fill = opts.fillMiB ?? 64;
  const seed = opts.seed ?? 1;
  const diskArgs = opts.disk ? ['vmsnap.disk=1'] : [];
  const append = [KERNEL_CMDLINE_BASE, `vmsnap.fill_mib=${fill}`, `vmsnap.seed=${seed}`, ...diskArgs, ...(opts.kernelArgs ?? [])].join(' ');
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

// ---- process tracking: no guest outlives the test process ----

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

export function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of live) {
        try {
          c.kill('SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
  }
}

// setpriv --pdeathsig makes the kernel kill QEMU even if this process dies
// without running its 'exit' handlers (SIGKILL, crash). It execs, so the
// child's pid is QEMU's.
let setprivPath: string | null | undefined;
export function findSetpriv(): string | null {
  if (setprivPath === undefined) {
    setprivPath = null;
    for (const p of ['/usr/bin/setpriv', '/bin/setpriv']) {
      if (fs.existsSync(p)) {
        const r = spawnSync(p, ['--pdeathsig', 'KILL', 'true'], { stdio: 'ignore' });
        if (r.status === 0) setprivPath = p;
        break;
      }
    }
  }
  return setprivPath;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch {
    return '';
  }
}

/**
 * Spawns QEMU for a guest and resolves once its QMP socket exists (it does not
 * wait for READY: use waitForSerial). Removes a stale qmp.sock and serial.log
 * in `dir` first, so one dir is one guest run. QEMU's own stdout/stderr go to
 * <dir>/qemu.log.
 */
export async function startGuest(opts: GuestOptions): Promise<Guest> {
  const assets = await ensureGuestAssets();
  const dir = path.resolve(opts.dir);
  fs.mkdirSync(dir, { recursive: true });
  const qmpPath = path.join(dir, 'qmp.sock');
  const serialPath = path.join(dir, 'serial.log');
  const logPath = path.join(dir, 'qemu.log');
  fs.rmSync(qmpPath, { force: true });
  fs.rmSync(serialPath, { force: true });

  const args = guestArgs(assets, { ...opts, dir });
  const logFd = fs.openSync(logPath, 'w');
  const setpriv = findSetpriv();
  const [bin, ...rest] = setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', ...args] : args;
  let child: ChildProcess;
  try {
    child = spawn(bin as string, rest, { stdio: ['ignore', logFd, logFd] });
  } finally {
    fs.closeSync(logFd);
  }
  track(child);

  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      exitCode = code;
      resolve(code);
    });
    child.once('error', () => {
      exitCode = null;
      resolve(null);
    });
  });

  const failure = (what: string) => {
    const log = readText(logPath).trim();
    const serial = readText(serialPath).slice(-2000).trim();
    return new Error(
      `guest ${opts.name ?? 'guest'}: ${what}\n  argv: ${args.join(' ')}` +
        (log ? `\n  qemu.log:\n${log}` : '') +
        (serial ? `\n  serial.log (tail):\n${serial}` : ''),
    );
  };

  // Wait for the QMP socket (or an early exit).
  const deadline = Date.now() + 30_000;
  while (!fs.existsSync(qmpPath)) {
    if (exitCode !== undefined) throw failure(`QEMU exited (code ${exitCode}) before creating ${qmpPath}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw failure(`no QMP socket after 30 s`);
    }
    await sleep(10);
  }

  const serialText = () => readText(serialPath);

  const guest: Guest = {
    qmpPath,
    serialPath,
    pid: child.pid ?? -1,
    args,
    process: child,
    exited,
    serialText,
    async waitForSerial(re: RegExp, timeoutMs = 60_000, fromOffset = 0): Promise<RegExpMatchArray> {
      const plain = new RegExp(re.source, re.flags.replace('g', ''));
      const end = Date.now() + timeoutMs;
      for (;;) {
        const gone = exitCode !== undefined;
        const m = serialText().slice(fromOffset).match(plain);
        if (m) return m;
        if (gone) throw failure(`QEMU exited (code ${exitCode}) while waiting for ${re}`);
        if (Date.now() > end) throw failure(`timed out after ${timeoutMs} ms waiting for ${re}`);
        await sleep(25);
      }
    },
    lastPass(): number {
      let max = 0;
      for (const m of serialText().matchAll(/VMSNAP PASS n=(\d+)/g)) max = Math.max(max, Number(m[1]));
      return max;
    },
    badLines(): string[] {
      return serialText()
        .split(/\r?\n/)
        .map((l) => l.replace(/\r$/, ''))
        .filter((l) => l.includes('VMSNAP BAD'));
    },
    async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
      if (exitCode !== undefined) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
  return guest;
}

/**
 * Sends one disk-mode command line (`write NAME`, `list TAG`, `umount TAG`) to
 * the guest whose working dir is `dir`; answers appear on its serial log.
 */
export function guestCommand(dir: string, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path.join(dir, 'ctl.sock'));
    sock.once('error', reject);
    sock.once('connect', () => sock.end(`${line}\n`, () => resolve()));
  });
}
