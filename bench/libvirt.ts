// The peer: libvirt 11's `virsh save --image-format sparse --parallel-channels 4
// --bypass-cache` and `virsh restore --parallel-channels 4 --bypass-cache`
// against the vmsnap CLI (`save --channels 4 --direct-io on --after stop`,
// `restore --launch --channels 4 --direct-io on`, and `restore` into a QEMU the
// bench starts itself with `-incoming defer`, timed from that QEMU's spawn), end
// to end as a user sees them (spawn to exit), on the same filesystem, in one
// run, with fio's sequential O_DIRECT read of the same bytes as the disk's limit.
//
// Both sides run the project's test guest under TCG (machine pc, qemu64, 1
// vCPU) with the same kernel, initrd, command line and RAM, its pattern
// filling ~90% of RAM. Each repetition: resume the guest and wait for a fresh
// `VMSNAP PASS`, drop caches, time the save (the VM ends stopped/destroyed),
// drop caches, wait the same pause for every side (VMSNAP_BENCH_RESTORE_PAUSE_MS,
// default 5000: memory freed just before is cheaper to touch again, so no side
// may restore sooner than another), time the restore (a new QEMU, running), and wait for the next
// PASS: every restore is verified by the guest itself. The side not being
// measured is paused (a running TCG guest keeps a core busy). The libvirt
// and vmsnap repetitions alternate, so a slow second on the disk hits both.
//
// libvirt comes from bench/libvirt-setup.sh: packages from bookworm-backports
// (installed only when missing) and a private libvirtd (own mount namespace,
// own config/state dirs, own socket), stopped at the end.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { tracedAtMs } from '../agent/src/clock.js';
import { processAlive, waitForExit } from '../agent/src/daemon/qemu-control.js';
import { ensureGuestAssets, guestChecks, KERNEL_CMDLINE_BASE, QEMU_BINARY, readText, startGuest, type Guest } from '../kit/guest.js';
import { dropCaches, ensureFio, fioRead, fioWrite, RESTORE_PAUSE_MS } from './baselines.js';
import { qmpExecute } from '../kit/qemu.js';
import { sleep } from '../kit/poll.js';

export interface LibvirtRow {
  sizeGiB: number;
  /** MiB of guest RAM the guest's pattern fills. */
  fillMiB: number;
  reps: number;
  /** Medians, ms, spawn to exit. */
  virshSaveMs: number;
  vmsnapSaveMs: number;
  /** virsh / vmsnap: above 1 means vmsnap is faster. */
  saveSpeedup: number;
  virshRestoreMs: number;
  vmsnapRestoreMs: number;
  restoreSpeedup: number;
  /** vmsnap restore --launch time / virsh restore time: below 1 means vmsnap is faster. */
  launchVsVirsh: number;
  /** Into a QEMU the bench started with -incoming defer: from that QEMU's spawn to the CLI's exit. */
  vmsnapAttachRestoreMs: number;
  attachVsVirsh: number;
  /** The launched restores' load (migrate-incoming to completed, the CLI's own durationMs): MiB/s, median. */
  vmsnapLoadMiBps: number;
  /** fio's sequential O_DIRECT read (1 MiB, several in flight) of as many bytes, same filesystem, median. */
  fioReadMiBps: number;
  loadVsFio: number;
  /**
   * vmsnap save from spawn until the saved VM's QEMU process had exited (median):
   * the CLI returns once QEMU accepted `quit`, virsh only after QEMU is gone.
   */
  vmsnapSaveUntilExitMs: number;
  /** virsh / that. */
  saveUntilExitSpeedup: number;
  /** Every run, in order. */
  runs: {
    virshSave: number[];
    vmsnapSave: number[];
    vmsnapSaveUntilExit: number[];
    virshRestore: number[];
    vmsnapRestore: number[];
    vmsnapAttachRestore: number[];
    vmsnapLoadMiBps: number[];
    fioReadMiBps: number[];
  };
  /** Save file sizes (last run): apparent and allocated bytes. */
  virshFile: { bytes: number; allocatedBytes: number };
  vmsnapFile: { bytes: number; allocatedBytes: number };
  /** Every restored guest printed a new PASS and no guest printed BAD. */
  verified: boolean;
}

export interface LibvirtOptions {
  /** Work dir on the filesystem under test (save files, serial logs, the private libvirtd). */
  dir: string;
  sizesGiB: number[];
  reps: number;
  log: (line: string) => void;
  /** Default 4. */
  channels?: number;
}

const DOMAIN_PREFIX = 'vmsnap-bench';
const BOOT_TIMEOUT_MS = 300_000;
const PASS_TIMEOUT_MS = 120_000;

const setupScript = () => path.join(packageRoot(), 'bench/libvirt-setup.sh');
const cliPath = () => path.join(packageRoot(), 'bin/vmsnap-agent');

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number, digits = 0) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Guest RAM filled by the pattern: 90%, but leave the kernel ~136 MiB (1 GiB guests OOM above ~900 MiB). */
export function fillMiBFor(memMiB: number): number {
  return Math.min(Math.floor(memMiB * 0.9), memMiB - 136);
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Spawn to exit. */
  ms: number;
}

/** Runs a command to completion; `ms` is wall time from spawn to process exit. */
function run(cmd: string, args: string[], timeoutMs = 600_000, env?: Record<string, string>): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let exitMs = 0;
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env: { ...process.env, ...env } } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => (exitMs = performance.now() - t0));
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: exitMs || performance.now() - t0 });
    });
  });
}

async function mustRun(cmd: string, args: string[], timeoutMs?: number, env?: Record<string, string>): Promise<RunResult> {
  const r = await run(cmd, args, timeoutMs, env);
  if (r.code !== 0) {
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
  }
  return r;
}

const lastPass = (serial: string) => guestChecks(readText(serial)).lastPass;
const badLines = (serial: string) => guestChecks(readText(serial)).bad;

/** Waits until the guest prints a PASS numbered above `after`; returns that number. */
async function waitForPass(serial: string, after: number, timeoutMs: number, alive: () => boolean, what: string): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const n = lastPass(serial);
    if (n > after) return n;
    const bad = badLines(serial);
    if (bad.length > 0) throw new Error(`${what}: the guest reported ${bad[0]!.trim()}`);
    if (!alive()) throw new Error(`${what}: the VM is gone while waiting for VMSNAP PASS n>${after} (${serial})`);
    if (Date.now() > end) throw new Error(`${what}: no VMSNAP PASS n>${after} within ${timeoutMs} ms (${serial})`);
    await sleep(50);
  }
}

async function waitPidGone(pid: number, timeoutMs = 30_000): Promise<void> {
  if (!(await waitForExit(pid, timeoutMs))) throw new Error(`QEMU pid ${pid} still running ${timeoutMs} ms after the save`);
}

function fileSizes(file: string): { bytes: number; allocatedBytes: number } {
  try {
    const st = fs.statSync(file);
    return { bytes: st.size, allocatedBytes: st.blocks * 512 };
  } catch {
    return { bytes: 0, allocatedBytes: 0 };
  }
}

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');

/** A transient TCG domain equivalent to kit/guest.ts's QEMU command line. */
export function domainXml(o: { name: string; memMiB: number; kernel: string; initrd: string; cmdline: string; serialPath: string; emulator: string }): string {
  return `<domain type='qemu'>
  <name>${xmlEscape(o.name)}</name>
  <memory unit='MiB'>${o.memMiB}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlEscape(o.kernel)}</kernel>
    <initrd>${xmlEscape(o.initrd)}</initrd>
    <cmdline>${xmlEscape(o.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>${xmlEscape(o.emulator)}</emulator>
    <serial type='file'>
      <source path='${xmlEscape(o.serialPath)}' append='on'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

function resolveBinary(bin: string): string {
  if (bin.includes('/')) return path.resolve(bin);
  for (const d of (process.env['PATH'] ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(d, bin);
    if (fs.existsSync(p)) return p;
  }
  return bin;
}

/** A private libvirtd started by bench/libvirt-setup.sh. */
class Libvirt {
  readonly uri: string;
  constructor(readonly privDir: string) {
    this.uri = `qemu:///system?socket=${path.join(privDir, 'sock/libvirt-sock')}`;
  }
  virsh(args: string[], timeoutMs?: number): Promise<RunResult> {
    return run('virsh', ['-q', '-c', this.uri, ...args], timeoutMs);
  }
  mustVirsh(args: string[], timeoutMs?: number): Promise<RunResult> {
    return mustRun('virsh', ['-q', '-c', this.uri, ...args], timeoutMs);
  }
  async domainRunning(name: string): Promise<boolean> {
    const r = await this.virsh(['domstate', name]);
    return r.code === 0 && /running|paused/.test(r.stdout);
  }
  async stop(): Promise<void> {
    await run('bash', [setupScript(), 'stop', this.privDir], 60_000);
  }
}

/** libvirt installed (if missing) and a private daemon running, or why not. */
async function startLibvirt(dir: string, log: (l: string) => void): Promise<Libvirt | { skipped: string }> {
  if (process.platform !== 'linux') return { skipped: 'libvirt comparison needs Linux' };
  if (process.getuid?.() !== 0) return { skipped: 'libvirt comparison needs root (system-mode libvirtd, drop_caches)' };
  const firstLine = (r: RunResult) => (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ');
  let r: RunResult;
  try {
    r = await run('bash', [setupScript(), 'install'], 900_000);
  } catch (e) {
    return { skipped: `cannot run bench/libvirt-setup.sh: ${(e as Error).message}` };
  }
  if (r.code !== 0) return { skipped: `libvirt 11 could not be installed: ${firstLine(r)}` };
  log(r.stdout.trim());
  const lv = new Libvirt(path.join(path.resolve(dir), 'libvirt-priv'));
  await lv.stop(); // a daemon left over from an interrupted run
  r = await run('bash', [setupScript(), 'start', lv.privDir], 120_000);
  if (r.code !== 0) {
    await lv.stop();
    return { skipped: `libvirtd could not be started: ${firstLine(r)}` };
  }
  log(r.stdout.trim());
  return lv;
}

interface Side {
  serial: string;
  /** Saved file of the current run. */
  file: string;
  alive(): boolean;
  resume(): Promise<void>;
  pause(): Promise<void>;
  /** CLI wall time, and the time until the saved VM's QEMU had exited (virsh waits for that itself). */
  save(): Promise<{ ms: number; untilExitMs: number; note?: string }>;
  /** `attach`: into a QEMU the caller starts (vmsnap only). */
  restore(mode?: 'launch' | 'attach'): Promise<{ ms: number; note?: string; loadMiBps?: number }>;
  destroy(): Promise<void>;
}

async function libvirtSide(lv: Libvirt, dir: string, name: string, xml: string, channels: number): Promise<Side> {
  const serial = path.join(dir, 'serial.log');
  const file = path.join(dir, 'virsh.save');
  const xmlPath = path.join(dir, 'domain.xml');
  fs.writeFileSync(xmlPath, xml);
  let running = false;
  await lv.mustVirsh(['create', xmlPath]);
  running = true;
  const side: Side = {
    serial,
    file,
    alive: () => running,
    async resume() {
      const st = (await lv.virsh(['domstate', name])).stdout;
      if (st.includes('paused')) await lv.mustVirsh(['resume', name]);
    },
    async pause() {
      await lv.mustVirsh(['suspend', name]);
    },
    async save() {
      const r = await lv.mustVirsh(['save', name, file, '--image-format', 'sparse', '--parallel-channels', String(channels), '--bypass-cache']);
      running = false;
      return { ms: r.ms, untilExitMs: r.ms };
    },
    async restore() {
      const r = await lv.mustVirsh(['restore', file, '--parallel-channels', String(channels), '--bypass-cache']);
      running = true;
      return { ms: r.ms };
    },
    async destroy() {
      if (await lv.domainRunning(name)) await lv.virsh(['destroy', name]);
      running = false;
    },
  };
  return side;
}

/** QEMU pids started by vmsnap restore --launch (detached): killed on exit whatever happens. */
const launchedPids = new Set<number>();
let exitHook = false;
function trackPid(pid: number): void {
  launchedPids.add(pid);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const p of launchedPids) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    });
  }
}

/** The CLI's step trace (on stderr): when it issued `migrate` or `migrate-incoming`, for the notes. */
const TRACE = { VMSNAP_TRACE: '1' };

async function vmsnapSide(dir: string, name: string, memMiB: number, fillMiB: number, channels: number): Promise<Side> {
  const file = path.join(dir, 'vmsnap.vms');
  const guest: Guest = await startGuest({ dir, name, memMiB, fillMiB, seed: 1 });
  let qmp = guest.qmpPath;
  let pid = guest.pid;
  let gen = 0;
  const cli = cliPath();
  return {
    serial: guest.serialPath,
    file,
    alive: () => processAlive(pid),
    async resume() {
      const st = await qmpExecute<{ status: string }>(qmp, 'query-status');
      if (st.status !== 'running') await qmpExecute(qmp, 'cont');
    },
    async pause() {
      await qmpExecute(qmp, 'stop');
    },
    async save() {
      const t0 = performance.now();
      const r = await mustRun(cli, ['save', '--qmp', qmp, '--out', file, '--channels', String(channels), '--direct-io', 'on', '--after', 'stop', '--json'], undefined, TRACE);
      const out = JSON.parse(r.stdout) as { directIO?: boolean; durationMs?: number };
      if (out.directIO !== true) throw new Error(`vmsnap save did not use O_DIRECT: ${r.stdout.trim()}`);
      // The CLI returns once QEMU accepted `quit`; virsh save returns once QEMU is gone.
      await waitPidGone(pid);
      return { ms: r.ms, untilExitMs: performance.now() - t0, note: `migrate at ${round(tracedAtMs(r.stderr, 'migrate issued') ?? NaN)} ms, migration ${out.durationMs} ms` };
    },
    async restore(mode = 'launch') {
      gen++;
      const sock = path.join(dir, `restored-${gen}.sock`);
      fs.rmSync(sock, { force: true });
      const t0 = performance.now();
      let attached: ReturnType<typeof spawn> | undefined;
      if (mode === 'attach') {
        // The caller's own QEMU: the guest's command line with -incoming defer, on a new socket.
        attached = spawn(guest.args[0]!, [...guest.args.slice(1).map((a) => a.split(guest.qmpPath).join(sock)), '-incoming', 'defer'], { stdio: 'ignore', detached: true });
        attached.unref();
        trackPid(attached.pid!);
        while (!fs.existsSync(sock)) {
          if (attached.exitCode !== null) throw new Error(`the attach target QEMU exited (${attached.exitCode})`);
          await sleep(2);
        }
      }
      const args = ['restore', '--in', file, '--qmp', sock, ...(mode === 'launch' ? ['--launch'] : []), '--channels', String(channels), '--direct-io', 'on', '--json'];
      const r = await mustRun(cli, args, undefined, TRACE);
      const ms = performance.now() - t0;
      const out = JSON.parse(r.stdout) as { directIO?: boolean; running?: boolean; launched?: { pid: number }; durationMs?: number; bytes?: number };
      const newPid = attached?.pid ?? out.launched?.pid;
      if (!newPid) throw new Error(`vmsnap restore --launch reported no QEMU: ${r.stdout.trim()}`);
      pid = newPid;
      trackPid(pid);
      qmp = sock;
      if (out.directIO !== true) throw new Error(`vmsnap restore did not use O_DIRECT: ${r.stdout.trim()}`);
      if (out.running !== true) throw new Error(`vmsnap restore left the VM paused: ${r.stdout.trim()}`);
      const loadMiBps = out.bytes && out.durationMs ? out.bytes / (1 << 20) / (out.durationMs / 1000) : undefined;
      return { ms, loadMiBps, note: `${mode}: migrate-incoming at ${round(tracedAtMs(r.stderr, 'migrate-incoming issued') ?? NaN)} ms, load ${out.durationMs} ms (${round(loadMiBps ?? NaN)} MiB/s)` };
    },
    async destroy() {
      if (processAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        await waitPidGone(pid);
      }
      await guest.kill('SIGKILL').catch(() => undefined);
      launchedPids.delete(pid);
    },
  };
}

/** One save + restore of a side, timed; the guest is verified before and after. */
async function round1(side: Side, what: string, log: (l: string) => void, mode?: 'launch' | 'attach'): Promise<{ save: number; saveUntilExit: number; restore: number; loadMiBps?: number }> {
  await side.resume();
  const before = await waitForPass(side.serial, lastPass(side.serial), PASS_TIMEOUT_MS, side.alive, `${what} before save`);
  fs.rmSync(side.file, { force: true });
  dropCaches();
  const saved = await side.save();
  const { ms: save, untilExitMs: saveUntilExit } = saved;
  dropCaches();
  await sleep(RESTORE_PAUSE_MS);
  const restored = await side.restore(mode);
  const restore = restored.ms;
  const after = await waitForPass(side.serial, before, PASS_TIMEOUT_MS, side.alive, `${what} after restore`);
  await side.pause();
  const saveNote = [saved.note, saveUntilExit !== save ? `QEMU gone at ${round(saveUntilExit)} ms` : undefined].filter(Boolean).join(', ');
  log(
    `  ${what}: save ${round(save)} ms${saveNote ? ` (${saveNote})` : ''}, restore ${round(restore)} ms${restored.note ? ` (${restored.note})` : ''}` +
      ` [guest PASS n=${before} before, n=${after} after]`,
  );
  return { save, saveUntilExit, restore, loadMiBps: restored.loadMiBps };
}

async function measureSize(lv: Libvirt, opts: LibvirtOptions, sizeGiB: number, channels: number): Promise<LibvirtRow> {
  const { log } = opts;
  const memMiB = Math.round(sizeGiB * 1024);
  const fillMiB = fillMiBFor(memMiB);
  const assets = await ensureGuestAssets();
  const base = path.join(path.resolve(opts.dir), `libvirt-${sizeGiB}g`);
  const lvDir = path.join(base, 'virsh');
  const vsDir = path.join(base, 'vmsnap');
  fs.rmSync(base, { recursive: true, force: true });
  fs.mkdirSync(lvDir, { recursive: true });
  fs.mkdirSync(vsDir, { recursive: true });
  const name = `${DOMAIN_PREFIX}-${sizeGiB}g`;
  const cmdline = `${KERNEL_CMDLINE_BASE} vmsnap.fill_mib=${fillMiB} vmsnap.seed=1`;
  log(`${sizeGiB} GiB guest, pattern ${fillMiB} MiB: booting the libvirt domain and the vmsnap QEMU`);

  const sides: Side[] = [];
  try {
    const lvSide = await libvirtSide(
      lv,
      lvDir,
      name,
      domainXml({ name, memMiB, kernel: assets.kernel, initrd: assets.initrd, cmdline, serialPath: path.join(lvDir, 'serial.log'), emulator: resolveBinary(QEMU_BINARY) }),
      channels,
    );
    sides.push(lvSide);
    await waitForPass(lvSide.serial, 0, BOOT_TIMEOUT_MS, lvSide.alive, 'libvirt domain boot');
    await lvSide.pause();
    const vsSide = await vmsnapSide(vsDir, name, memMiB, fillMiB, channels);
    sides.push(vsSide);
    await waitForPass(vsSide.serial, 0, BOOT_TIMEOUT_MS, vsSide.alive, 'vmsnap QEMU boot');
    await vsSide.pause();

    const runs: LibvirtRow['runs'] = {
      virshSave: [],
      vmsnapSave: [],
      vmsnapSaveUntilExit: [],
      virshRestore: [],
      vmsnapRestore: [],
      vmsnapAttachRestore: [],
      vmsnapLoadMiBps: [],
      fioReadMiBps: [],
    };
    type Who = 'virsh' | 'vmsnap' | 'vmsnap attach';
    const fioFile = path.join(base, 'fio.bin');
    for (let i = 0; i < opts.reps; i++) {
      // Rotate which goes first, so none always follows another's I/O.
      const all: Who[] = ['virsh', 'vmsnap', 'vmsnap attach'];
      const order = [...all.slice(i % 3), ...all.slice(0, i % 3)];
      for (const who of order) {
        const side = who === 'virsh' ? lvSide : vsSide;
        const r = await round1(side, `${sizeGiB} GiB run ${i + 1} ${who}`, log, who === 'vmsnap attach' ? 'attach' : 'launch');
        if (who === 'vmsnap attach') {
          runs.vmsnapAttachRestore.push(r.restore);
          continue;
        }
        runs[`${who}Save`].push(r.save);
        runs[`${who}Restore`].push(r.restore);
        if (who === 'vmsnap') {
          runs.vmsnapSaveUntilExit.push(r.saveUntilExit);
          if (r.loadMiBps) runs.vmsnapLoadMiBps.push(r.loadMiBps);
        }
      }
      // The disk's limit for as many bytes as the vmsnap file holds, in the same run.
      const bytes = Math.max(fileSizes(vsSide.file).allocatedBytes, 64 << 20);
      fioWrite(fioFile, bytes);
      runs.fioReadMiBps.push(fioRead(fioFile, bytes));
      fs.rmSync(fioFile, { force: true });
    }
    const bad = [...badLines(lvSide.serial), ...badLines(vsSide.serial)];
    const ms = (xs: number[]) => xs.map((x) => round(x));
    const row: LibvirtRow = {
      sizeGiB,
      fillMiB,
      reps: opts.reps,
      virshSaveMs: round(median(runs.virshSave)),
      vmsnapSaveMs: round(median(runs.vmsnapSave)),
      saveSpeedup: round(median(runs.virshSave) / median(runs.vmsnapSave), 2),
      virshRestoreMs: round(median(runs.virshRestore)),
      vmsnapRestoreMs: round(median(runs.vmsnapRestore)),
      restoreSpeedup: round(median(runs.virshRestore) / median(runs.vmsnapRestore), 2),
      launchVsVirsh: round(median(runs.vmsnapRestore) / median(runs.virshRestore), 2),
      vmsnapAttachRestoreMs: round(median(runs.vmsnapAttachRestore)),
      attachVsVirsh: round(median(runs.vmsnapAttachRestore) / median(runs.virshRestore), 2),
      vmsnapLoadMiBps: round(median(runs.vmsnapLoadMiBps)),
      fioReadMiBps: round(median(runs.fioReadMiBps)),
      loadVsFio: round(median(runs.vmsnapLoadMiBps) / median(runs.fioReadMiBps), 2),
      vmsnapSaveUntilExitMs: round(median(runs.vmsnapSaveUntilExit)),
      saveUntilExitSpeedup: round(median(runs.virshSave) / median(runs.vmsnapSaveUntilExit), 2),
      runs: {
        virshSave: ms(runs.virshSave),
        vmsnapSave: ms(runs.vmsnapSave),
        vmsnapSaveUntilExit: ms(runs.vmsnapSaveUntilExit),
        virshRestore: ms(runs.virshRestore),
        vmsnapRestore: ms(runs.vmsnapRestore),
        vmsnapAttachRestore: ms(runs.vmsnapAttachRestore),
        vmsnapLoadMiBps: ms(runs.vmsnapLoadMiBps),
        fioReadMiBps: ms(runs.fioReadMiBps),
      },
      virshFile: fileSizes(lvSide.file),
      vmsnapFile: fileSizes(vsSide.file),
      verified: bad.length === 0,
    };
    return row;
  } finally {
    for (const s of sides) await s.destroy().catch(() => undefined);
    fs.rmSync(base, { recursive: true, force: true });
  }
}

/**
 * Measures virsh save/restore against the vmsnap CLI per guest size. Returns
 * `{ skipped }` (never throws) when libvirt cannot be installed or started;
 * a failure during the measurement itself throws, after cleaning up.
 */
export async function compareWithLibvirt(opts: LibvirtOptions): Promise<LibvirtRow[] | { skipped: string }> {
  const channels = opts.channels ?? 4;
  if (!fs.existsSync(cliPath())) throw new Error(`${cliPath()} is missing: run npm run build first`);
  fs.mkdirSync(opts.dir, { recursive: true });
  ensureFio();
  let lv: Libvirt | { skipped: string };
  try {
    lv = await startLibvirt(opts.dir, opts.log);
  } catch (e) {
    return { skipped: `libvirt setup failed: ${(e as Error).message}` };
  }
  if (!(lv instanceof Libvirt)) return lv;
  const daemon = lv;
  const onExit = () => {
    // Last resort if the process exits without reaching `finally`.
    spawnSync('bash', [setupScript(), 'stop', daemon.privDir], { stdio: 'ignore', timeout: 60_000 });
  };
  process.once('exit', onExit);
  try {
    const ver = (await daemon.virsh(['version'])).stdout.split('\n').filter((l) => /Using|Running/.test(l));
    for (const l of ver) opts.log(l.trim());
    const rows: LibvirtRow[] = [];
    for (const size of opts.sizesGiB) rows.push(await measureSize(daemon, opts, size, channels));
    return rows;
  } finally {
    process.removeListener('exit', onExit);
    await daemon.stop();
    fs.rmSync(daemon.privDir, { recursive: true, force: true });
  }
}

const COLUMNS: Array<[string, (r: LibvirtRow) => string | number]> = [
  ['GiB', (r) => r.sizeGiB],
  ['fill MiB', (r) => r.fillMiB],
  ['virsh save ms', (r) => r.virshSaveMs],
  ['vmsnap save ms', (r) => r.vmsnapSaveMs],
  ['save x', (r) => r.saveSpeedup],
  ['vmsnap save+exit ms', (r) => r.vmsnapSaveUntilExitMs],
  ['x', (r) => r.saveUntilExitSpeedup],
  ['virsh restore ms', (r) => r.virshRestoreMs],
  ['vmsnap --launch ms', (r) => r.vmsnapRestoreMs],
  ['/virsh', (r) => r.launchVsVirsh],
  ['vmsnap attach ms', (r) => r.vmsnapAttachRestoreMs],
  ['/virsh', (r) => r.attachVsVirsh],
  ['load MiB/s', (r) => r.vmsnapLoadMiBps],
  ['fio read', (r) => r.fioReadMiBps],
  ['load/fio', (r) => r.loadVsFio],
  ['verified', (r) => (r.verified ? 'yes' : 'NO')],
];

/** The comparison as text lines ('x' = virsh time / vmsnap time: above 1, vmsnap is faster; '/virsh' = vmsnap time / virsh time). */
export function formatLibvirtTable(rows: LibvirtRow[]): string[] {
  const w = COLUMNS.map(([h]) => Math.max(8, h.length));
  return [
    COLUMNS.map(([h], i) => h.padStart(w[i]!)).join(' '),
    ...rows.map((r) => COLUMNS.map(([, f], i) => String(f(r)).padStart(w[i]!)).join(' ')),
  ];
}

/** compareWithLibvirt, then the table (or the reason it was skipped) through `log`. */
export async function runLibvirtComparison(opts: LibvirtOptions): Promise<LibvirtRow[] | { skipped: string }> {
  const result = await compareWithLibvirt(opts);
  if (!Array.isArray(result)) {
    opts.log(`libvirt comparison skipped: ${result.skipped}`);
    return result;
  }
  opts.log(`vmsnap vs libvirt (virsh save --image-format sparse --parallel-channels ${opts.channels ?? 4} --bypass-cache / virsh restore), medians of ${opts.reps}, ${RESTORE_PAUSE_MS} ms between save and restore; x = virsh ms / vmsnap ms, /virsh = vmsnap ms / virsh ms`);
  for (const l of formatLibvirtTable(result)) opts.log(l);
  return result;
}
