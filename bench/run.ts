// `npm run bench`: save and restore throughput against the disk's limit, fio's
// sequential O_DIRECT I/O at 1 MiB with several requests in flight (dd with
// O_DIRECT, one request in flight, as a second column), and QEMU's legacy
// stream, as ratios from one run. Saves are the CLI's, `vmsnap-agent save`,
// timed from its spawn to its exit, against fio writing the file's present bytes.
// Restores run as the operator runs them (vmsnap launches QEMU; the launch is
// reported apart from the load) and into a QEMU started by the caller (attach).
// Env: VMSNAP_BENCH_SIZES_GIB (default "1,2,4"), VMSNAP_BENCH_CHANNELS ("1,2,4,8"),
// VMSNAP_BENCH_REPS (3), VMSNAP_BENCH_DIR (default /var/tmp/vmsnap-bench: must be on the disk under test).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { restoreVm } from '../agent/src/engine/restore.js';
import { tracedAtMs } from '../agent/src/clock.js';
import { preallocatedLaunch } from './prealloc.js';
import { packageRoot } from '../agent/src/package-root.js';
import { ddRead, ddWrite, ensureFio, evictFile, FIO_BLOCK, FIO_IODEPTH, fioRead, fioWrite, legacyRestore, legacySave, RESTORE_PAUSE_MS, sleep } from './baselines.js';
import { fillRandom, recordPlainRam, startBenchVm } from './qemu-vm.js';
import { killAndWait, qmpExecute } from '../kit/qemu.js';
import { performance } from 'node:perf_hooks';
import { renderSvg } from './plot.js';
import { throughputMiBps as mibps } from '../api/format.js';

const GiB = 1 << 30;
const MiB = 1 << 20;

function list(env: string | undefined, fallback: number[]): number[] {
  return env ? env.split(',').map(Number).filter((n) => n > 0) : fallback;
}

export interface Row {
  sizeGiB: number;
  channels: number;
  directIO: boolean;
  /** `vmsnap-agent save --after stop` from its spawn to its exit. */
  saveMs: number;
  /** The engine's own time of that save (`migrate` to the finished file, the CLI's `durationMs`). */
  saveEngineMs: number;
  restoreMs: number;
  /** The saved file's present (allocated) bytes: what fio and dd write, and what saveMiBps counts. */
  bytes: number;
  saveMiBps: number;
  restoreMiBps: number;
  /** The disk's limit: fio, sequential O_DIRECT, 1 MiB blocks, FIO_IODEPTH requests in flight, the same bytes. */
  fioWriteMiBps: number;
  fioReadMiBps: number;
  /** Median over the runs of each save's MiB/s over the fio write right after it. */
  saveVsFio: number;
  restoreVsFio: number;
  ddWriteMiBps: number;
  ddReadMiBps: number;
  saveVsDd: number;
  restoreVsDd: number;
  /** The same launched restore with the guest RAM preallocated before the load (bench/prealloc.ts): from the call to a loaded VM. */
  preallocLaunchedRestoreMs: number;
  /** The launched restore's time before the load: QEMU's start, the preallocation (if any), the QMP set-up. */
  launchMs: number;
  /** The launched restore from the call to a loaded VM: launchMs + restoreMs. */
  launchedRestoreMs: number;
  /** Restore into a QEMU the caller started (-incoming defer, RAM not preallocated): the engine's migration time. */
  attachRestoreMs: number;
  attachRestoreMiBps: number;
  attachRestoreVsDd: number;
  attachRestoreVsFio: number;
  legacySaveMiBps: number;
  legacyRestoreMiBps: number;
  saveVsLegacy: number;
  restoreVsLegacy: number;
}

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

async function cliStartupMs(dir: string, ramBytes: number): Promise<number> {
  const memFile = path.join('/dev/shm', 'vmsnap-bench-startup.ram');
  fillRandom(memFile, ramBytes);
  const vm = await startBenchVm({ dir, name: 'startup', ramBytes, memFile });
  try {
    const out = path.join(dir, 'startup.vms');
    const cli = path.join(packageRoot(), 'bin/vmsnap-agent');
    // The CLI's trace says when it issued `migrate`, in ms since its process started.
    const r = spawnSync(cli, ['save', '--qmp', vm.qmp, '--out', out], { encoding: 'utf8', env: { ...process.env, VMSNAP_TRACE: '1' } });
    fs.rmSync(out, { force: true });
    if (r.status !== 0) throw new Error(`vmsnap-agent save failed: ${r.stderr}`);
    return Math.round(tracedAtMs(r.stderr, 'migrate issued') ?? NaN);
  } finally {
    await vm.stop();
    fs.rmSync(memFile, { force: true });
  }
}

/**
 * `vmsnap-agent save --after stop`, timed from its spawn to its exit (QEMU answers QMP before
 * the clock starts), with the file's present bytes and the engine's own time from its --json.
 */
async function cliSave(qmp: string, file: string, channels: number, directIO: boolean): Promise<{ cliMs: number; engineMs: number; presentBytes: number }> {
  await qmpExecute(qmp, 'query-status');
  const cli = path.join(packageRoot(), 'bin/vmsnap-agent');
  const argv = ['save', '--qmp', qmp, '--out', file, '--channels', String(channels), '--direct-io', directIO ? 'on' : 'off', '--after', 'stop', '--json'];
  const t0 = performance.now();
  const r = spawnSync(cli, argv, { encoding: 'utf8' });
  const cliMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`vmsnap-agent ${argv.join(' ')} failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { durationMs: number; directIO: boolean };
  if (out.directIO !== directIO) throw new Error(`vmsnap-agent save used direct I/O ${out.directIO}, asked ${directIO}: ${r.stdout.trim()}`);
  return { cliMs, engineMs: out.durationMs, presentBytes: fs.statSync(file).blocks * 512 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * One CLI save and three engine restores of the bench VM, the restores timed by the engine
 * itself (migrate-incoming to completed): a launched restore (the
 * operator's path: QEMU started by vmsnap, the channels fault the guest RAM in
 * beside their reads; the time before the load is reported apart as launchMs),
 * the same with the RAM preallocated first (the alternative, timed end to end),
 * and an attach restore (into a QEMU the caller started).
 */
async function engineRound(dir: string, ramBytes: number, memFile: string, channels: number, directIO: boolean, rep: number) {
  const file = path.join(dir, 'snap.vms');
  fs.rmSync(file, { force: true });
  const src = await startBenchVm({ dir, name: 'src', ramBytes, memFile });
  const saved = await cliSave(src.qmp, file, channels, directIO);
  await src.stop();
  recordPlainRam(file);
  // Each restore after the same eviction and pause (RESTORE_PAUSE_MS): none gets the memory the previous one just freed.
  const cold = async () => {
    evictFile(file);
    await sleep(RESTORE_PAUSE_MS);
  };
  const launch = async (prealloc: boolean) => {
    await cold();
    const t0 = performance.now();
    const hooks = prealloc ? { launchArgv: preallocatedLaunch((why) => console.log(`  not preallocated: ${why}`)) } : {};
    const r = await restoreVm({ inPath: file, qmpSocket: path.join(dir, 'launched.sock'), channels, directIO: directIO ? 'on' : 'off', launch: true, paused: true }, hooks);
    const ms = Math.round(performance.now() - t0);
    await killAndWait(r.launched!.pid);
    return { r, ms };
  };
  // Preallocating happens before QEMU answers on QMP: on slow memory it can outlast the launch timeout (NaN then).
  const launchPrealloc = () =>
    launch(true).then(
      ({ ms }) => ms,
      (err: Error) => (console.log(`  preallocated launch failed: ${err.message.split('\n')[0]}`), NaN),
    );
  // Which goes first alternates: the first restore after the save gets memory that was freed longest ago.
  const preallocFirst = rep % 2 === 1;
  const preallocEarly = preallocFirst ? await launchPrealloc() : undefined;
  const { r: launched, ms: launchedMs } = await launch(false);
  const preallocMs = preallocEarly ?? (await launchPrealloc());
  const dst = await startBenchVm({ dir, name: 'dst', ramBytes, incoming: true });
  await cold();
  const attached = await restoreVm({ inPath: file, qmpSocket: dst.qmp, channels, directIO: directIO ? 'on' : 'off', paused: true });
  await dst.stop();
  fs.rmSync(file, { force: true });
  return { saved, launched, launchedMs, preallocMs, attached };
}

/**
 * Each configuration runs REPS times, interleaved with dd of the same bytes,
 * and reports medians: the virtual disks here vary by 2x from one second to the next.
 */
async function measure(dir: string, sizeGiB: number, channelsList: number[], reps: number): Promise<Row[]> {
  const ramBytes = sizeGiB * GiB;
  const memFile = path.join('/dev/shm', `vmsnap-bench-${sizeGiB}g.ram`);
  const ddFile = path.join(dir, 'dd.bin');
  const rows: Row[] = [];
  fillRandom(memFile, ramBytes);
  try {
    const legacyFile = path.join(dir, 'legacy.bin');
    const legacySaves: number[] = [];
    const legacyRestores: number[] = [];
    for (let i = 0; i < reps; i++) {
      const src = await startBenchVm({ dir, name: 'legacy-src', ramBytes, memFile });
      legacySaves.push(await legacySave(src, legacyFile));
      await src.stop();
      const dst = await startBenchVm({ dir, name: 'legacy-dst', ramBytes, incoming: true });
      legacyRestores.push(await legacyRestore(dst, legacyFile));
      await dst.stop();
      fs.rmSync(legacyFile, { force: true });
    }

    for (const directIO of [true, false]) {
      for (const channels of channelsList) {
        const save: number[] = [];
        const saveEngine: number[] = [];
        const saveVsFio: number[] = [];
        const restore: number[] = [];
        const attach: number[] = [];
        const launch: number[] = [];
        const ddW: number[] = [];
        const ddR: number[] = [];
        const fioW: number[] = [];
        const fioR: number[] = [];
        const launchedE2e: number[] = [];
        let bytes = 0;
        let restoredBytes = 0;
        const preallocE2e: number[] = [];
        for (let i = 0; i < reps; i++) {
          const { saved, launched, launchedMs, preallocMs, attached } = await engineRound(dir, ramBytes, memFile, channels, directIO, i);
          bytes = saved.presentBytes;
          restoredBytes = launched.bytes;
          preallocE2e.push(preallocMs);
          save.push(saved.cliMs);
          saveEngine.push(saved.engineMs);
          restore.push(launched.durationMs);
          launch.push(launchedMs - launched.durationMs);
          launchedE2e.push(launchedMs);
          attach.push(attached.durationMs);
          ddW.push(ddWrite(memFile, ddFile, bytes));
          ddR.push(ddRead(ddFile));
          fs.rmSync(ddFile, { force: true });
          fioW.push(fioWrite(ddFile, bytes));
          saveVsFio.push(mibps(bytes, saved.cliMs) / fioW.at(-1)!);
          fioR.push(fioRead(ddFile, bytes));
          fs.rmSync(ddFile, { force: true });
        }
        const saveMiBps = mibps(bytes, median(save));
        const restoreMiBps = mibps(restoredBytes, median(restore));
        const attachRestoreMiBps = mibps(restoredBytes, median(attach));
        const ddWriteMiBps = mibps(bytes, median(ddW));
        const ddReadMiBps = mibps(bytes, median(ddR));
        const fioWriteMiBps = Math.round(median(fioW));
        const fioReadMiBps = Math.round(median(fioR));
        const row: Row = {
          sizeGiB,
          channels,
          directIO,
          saveMs: Math.round(median(save)),
          saveEngineMs: median(saveEngine),
          restoreMs: median(restore),
          bytes,
          saveMiBps,
          restoreMiBps,
          fioWriteMiBps,
          fioReadMiBps,
          saveVsFio: ratio(median(saveVsFio), 1),
          restoreVsFio: ratio(restoreMiBps, fioReadMiBps),
          ddWriteMiBps,
          ddReadMiBps,
          saveVsDd: ratio(saveMiBps, ddWriteMiBps),
          restoreVsDd: ratio(restoreMiBps, ddReadMiBps),
          preallocLaunchedRestoreMs: preallocE2e.some(Number.isNaN) ? NaN : median(preallocE2e),
          launchMs: median(launch),
          launchedRestoreMs: median(launchedE2e),
          attachRestoreMs: median(attach),
          attachRestoreMiBps,
          attachRestoreVsDd: ratio(attachRestoreMiBps, ddReadMiBps),
          attachRestoreVsFio: ratio(attachRestoreMiBps, fioReadMiBps),
          legacySaveMiBps: mibps(bytes, median(legacySaves)),
          legacyRestoreMiBps: mibps(bytes, median(legacyRestores)),
          // Both timed from migrate to a durable file, in the process that drives QEMU.
          saveVsLegacy: ratio(median(legacySaves), median(saveEngine)),
          restoreVsLegacy: ratio(median(legacyRestores), median(restore)),
        };
        rows.push(row);
        printRow(row);
      }
    }
  } finally {
    fs.rmSync(memFile, { force: true });
  }
  return rows;
}

const COLUMNS: Array<[string, (r: Row) => string | number]> = [
  ['GiB', (r) => r.sizeGiB],
  ['ch', (r) => r.channels],
  ['O_DIRECT', (r) => (r.directIO ? 'on' : 'off')],
  ['save ms', (r) => r.saveMs],
  ['engine ms', (r) => r.saveEngineMs],
  ['save MiB/s', (r) => r.saveMiBps],
  ['fio write', (r) => r.fioWriteMiBps],
  ['save/fio', (r) => r.saveVsFio],
  ['dd write', (r) => r.ddWriteMiBps],
  ['restore MiB/s', (r) => r.restoreMiBps],
  ['fio read', (r) => r.fioReadMiBps],
  ['restore/fio', (r) => r.restoreVsFio],
  ['dd read', (r) => r.ddReadMiBps],
  ['launch ms', (r) => r.launchMs],
  ['launch+load ms', (r) => r.launchedRestoreMs],
  ['prealloc+load ms', (r) => r.preallocLaunchedRestoreMs],
  ['attach/fio', (r) => r.attachRestoreVsFio],
  ['legacy save', (r) => r.legacySaveMiBps],
  ['x legacy', (r) => r.saveVsLegacy],
  ['legacy restore', (r) => r.legacyRestoreMiBps],
  ['x legacy', (r) => r.restoreVsLegacy],
];

function printHeader(): void {
  console.log(COLUMNS.map(([h]) => h.padStart(Math.max(8, h.length))).join(' '));
}

function printRow(r: Row): void {
  console.log(COLUMNS.map(([h, f]) => String(f(r)).padStart(Math.max(8, h.length))).join(' '));
}

async function main(): Promise<void> {
  const sizes = list(process.env.VMSNAP_BENCH_SIZES_GIB, [1, 2, 4]);
  const channels = list(process.env.VMSNAP_BENCH_CHANNELS, [1, 2, 4, 8]);
  const reps = Number(process.env.VMSNAP_BENCH_REPS ?? 3);
  const dir = process.env.VMSNAP_BENCH_DIR ?? '/var/tmp/vmsnap-bench';
  fs.mkdirSync(dir, { recursive: true });
  ensureFio();
  const fsType = execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  const qemu = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  console.log(`vmsnap bench: ${qemu}; ${dir} (${fsType}); sizes ${sizes.join(',')} GiB; channels ${channels.join(',')}; ${reps} runs each, medians`);
  const startupMs = await cliStartupMs(dir, 256 * MiB);
  console.log(`CLI start-up to 'migrate': ${startupMs} ms`);
  printHeader();
  const rows: Row[] = [];
  for (const size of sizes) rows.push(...(await measure(dir, size, channels, reps)));

  const best = (pick: (r: Row) => number) => Math.max(...rows.map(pick));
  const summary = {
    cliStartupToMigrateMs: startupMs,
    bestSaveVsFio: best((r) => r.saveVsFio),
    // The CLI's save, command to exit, with 2 or more channels and O_DIRECT: the lowest ratio to fio's write.
    worstSaveVsFio2PlusChannels: Math.min(...rows.filter((r) => r.channels >= 2 && r.directIO).map((r) => r.saveVsFio)),
    bestRestoreVsFio: best((r) => r.restoreVsFio),
    // Per size, the best configuration; of those, the worst size: what holds at every size.
    worstSizeBestSaveVsFio: Math.min(...sizes.map((g) => Math.max(...rows.filter((r) => r.sizeGiB === g).map((r) => r.saveVsFio)))),
    worstSizeBestRestoreVsFio: Math.min(...sizes.map((g) => Math.max(...rows.filter((r) => r.sizeGiB === g).map((r) => r.restoreVsFio)))),
    bestSaveVsDd: best((r) => r.saveVsDd),
    bestRestoreVsDd: best((r) => r.restoreVsDd),
    bestSaveVsLegacy: best((r) => r.saveVsLegacy),
    bestRestoreVsLegacy: best((r) => r.restoreVsLegacy),
  };
  console.log(`summary: ${JSON.stringify(summary)}`);
  const resultsDir = path.join(packageRoot(), 'bench/results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const fioSettings = `fio --rw=write|read --bs=${FIO_BLOCK} --iodepth=${FIO_IODEPTH} --ioengine=libaio --direct=1`;
  const report: Record<string, unknown> = { date: new Date().toISOString(), qemu, filesystem: fsType, dir, fio: fioSettings, nproc: execFileSync('nproc', { encoding: 'utf8' }).trim(), summary, rows };
  fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  fs.writeFileSync(path.join(resultsDir, 'latest.svg'), renderSvg(rows));
  console.log(`wrote ${path.join(resultsDir, 'latest.json')} and latest.svg`);
  // What freezing a VM's disks adds to the pause of a snapshot.
  if (process.env.VMSNAP_BENCH_DISKS !== '0') {
    const { measureDiskPause } = await import('./disks.js');
    const diskRows = await measureDiskPause({ dir, ramGiB: 1, diskGiB: 16, reps, log: (l) => console.log(l) });
    for (const d of diskRows) {
      console.log(
        `Disk freeze, ${d.mode}, ${d.ramGiB} GiB RAM + ${d.diskGiB} GiB disk: paused ${d.pausedMsNoDisk} ms without the disk, ${d.pausedMsDisk} ms with it ` +
          `(+${d.extraPauseMs} ms; the freeze itself ${d.diskFreezeMs} ms)`,
      );
    }
    report.diskFreeze = diskRows;
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  }
  // Kubernetes overhead: kubectl apply -> Succeeded against the engine's own save time.
  if (process.env.VMSNAP_BENCH_K8S !== '0') {
    const { measureK8sOverhead } = await import('./k8s-overhead.js');
    // Five runs at least: the figure is the median of the runs' own overheads.
    const k8sRow = await measureK8sOverhead({ sizeGiB: 2, reps: Math.max(reps, 5), log: (l) => console.log(l) });
    console.log(`Kubernetes overhead, 2 GiB VM: apply -> Succeeded ${k8sRow.wallMs} ms, engine ${k8sRow.engineMs} ms, overhead ${k8sRow.overheadMs} ms, median of ${k8sRow.overheadMsRuns.join(', ')}`);
    report.k8sOverhead = k8sRow;
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  }
  // The verification mode's cost (digests after the save, a check before the restore): opt-in.
  if (process.env.VMSNAP_BENCH_VERIFY === '1') {
    const { measureVerification } = await import('./verify.js');
    report.verification = await measureVerification({ dir, sizeGiB: Math.min(...sizes), channels: 4, reps, log: (l) => console.log(l) });
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  }
  // The pause of a live save of a guest writing 100 MiB/s (VMSNAP_BENCH_LIVE_PAUSE=0 skips it; bench/live-pause-main.ts runs it alone).
  if (process.env.VMSNAP_BENCH_LIVE_PAUSE !== '0') {
    const { livePauseSection } = await import('./live-pause-main.js');
    report.livePause = await livePauseSection((l) => console.log(l), dir);
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  }
  // Lazy against eager restore (VMSNAP_BENCH_LAZY=0 skips it; bench/lazy-main.ts runs it alone).
  if (process.env.VMSNAP_BENCH_LAZY !== '0') {
    const { lazySection } = await import('./lazy-main.js');
    report.lazy = await lazySection((l) => console.log(l));
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  }
  // Lazy against eager VMRestore of a VM pod on the real node (VMSNAP_BENCH_POD_LAZY=0 skips it; bench/pod-lazy-main.ts runs it alone).
  if (process.env.VMSNAP_BENCH_POD_LAZY !== '0') {
    const { podLazySection } = await import('./pod-lazy.js');
    report.podLazy = await podLazySection((l) => console.log(l), dir);
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  }
  // libvirt's virsh save/restore on the same guest: opt-in (installs libvirt, needs root).
  if (process.env.VMSNAP_BENCH_LIBVIRT === '1') {
    const { runLibvirtComparison } = await import('./libvirt.js');
    await runLibvirtComparison({ dir, sizesGiB: sizes, reps, log: (l) => console.log(l) });
  }
}

await main();
process.exit(0);
