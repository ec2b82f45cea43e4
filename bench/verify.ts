// The verification mode's cost in bench terms. A save with digests must keep
// its save time (pause to durable file) and its ratio to dd: the digests are
// computed after the VM resumed, so they cost extra disk reads afterwards, not
// save time. A verified restore reads the file once more before QEMU starts.
// Run from bench/run.ts with VMSNAP_BENCH_VERIFY=1, or alone:
//   node dist/bench/verify.js   (VMSNAP_BENCH_DIR, VMSNAP_BENCH_VERIFY_GIB, VMSNAP_BENCH_REPS)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { saveVm } from '../agent/src/engine/save.js';
import { restoreVm } from '../agent/src/engine/restore.js';
import { digestsPath } from '../agent/src/snapshot-file/digests.js';
import { packageRoot } from '../agent/src/package-root.js';
import { ddRead, ddWrite, dropCaches } from './baselines.js';
import { fillRandom, startBenchVm } from './qemu-vm.js';
import { throughputMiBps as mibps } from '../api/format.js';

export interface VerifyRow {
  sizeGiB: number;
  channels: number;
  /** Medians. Save time = pause to durable, complete file; the digest pass comes after and is not in it. */
  saveMs: number;
  saveWithDigestsMs: number;
  vmPausedMs: number;
  vmPausedWithDigestsMs: number;
  ddWriteMs: number;
  saveVsDd: number;
  saveWithDigestsVsDd: number;
  /** The digest pass after the save (VM running), and the check before a verified restore. */
  digestMs: number;
  digestMiBps: number;
  restoreMs: number;
  verifyMs: number;
  verifyMiBps: number;
  ddReadMs: number;
  /** How much longer a verified restore takes overall (check + load) than a plain one. */
  verifiedRestoreVsPlain: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

export async function measureVerification(opts: { dir: string; sizeGiB: number; channels: number; reps: number; log: (l: string) => void }): Promise<VerifyRow> {
  const ramBytes = opts.sizeGiB * (1 << 30);
  const memFile = path.join('/dev/shm', `vmsnap-bench-verify-${opts.sizeGiB}g.ram`);
  const file = path.join(opts.dir, 'verify.vms');
  const ddFile = path.join(opts.dir, 'verify-dd.bin');
  fillRandom(memFile, ramBytes);
  const m = { save: [] as number[], saveD: [] as number[], paused: [] as number[], pausedD: [] as number[], digest: [] as number[] };
  const r = { restore: [] as number[], verify: [] as number[], ddW: [] as number[], ddR: [] as number[] };
  let bytes = 0;
  try {
    for (let i = 0; i < opts.reps; i++) {
      for (const digest of [false, true]) {
        fs.rmSync(file, { force: true });
        fs.rmSync(digestsPath(file), { force: true });
        const src = await startBenchVm({ dir: opts.dir, name: 'verify-src', ramBytes, memFile });
        const saved = await saveVm({ qmpSocket: src.qmp, outPath: file, channels: opts.channels, directIO: 'on', after: 'resume', live: false, digest });
        await src.stop();
        bytes = saved.bytes;
        (digest ? m.saveD : m.save).push(saved.durationMs);
        (digest ? m.pausedD : m.paused).push(saved.vmPausedMs);
        if (digest) {
          if (!saved.digests || 'error' in saved.digests) throw new Error(`no digests: ${JSON.stringify(saved.digests)}`);
          m.digest.push(saved.digests.durationMs);
        }
      }
      for (const verify of [false, true]) {
        dropCaches();
        const dst = await startBenchVm({ dir: opts.dir, name: 'verify-dst', ramBytes, incoming: true });
        const restored = await restoreVm({ inPath: file, qmpSocket: dst.qmp, directIO: 'on', paused: true, verify });
        await dst.stop();
        if (verify) r.verify.push(restored.verified!.durationMs);
        else r.restore.push(restored.durationMs);
      }
      r.ddW.push(ddWrite(memFile, ddFile, bytes));
      r.ddR.push(ddRead(ddFile));
      fs.rmSync(ddFile, { force: true });
    }
  } finally {
    fs.rmSync(file, { force: true });
    fs.rmSync(digestsPath(file), { force: true });
    fs.rmSync(memFile, { force: true });
  }
  const row: VerifyRow = {
    sizeGiB: opts.sizeGiB,
    channels: opts.channels,
    saveMs: median(m.save),
    saveWithDigestsMs: median(m.saveD),
    vmPausedMs: median(m.paused),
    vmPausedWithDigestsMs: median(m.pausedD),
    ddWriteMs: median(r.ddW),
    saveVsDd: ratio(median(r.ddW), median(m.save)),
    saveWithDigestsVsDd: ratio(median(r.ddW), median(m.saveD)),
    digestMs: median(m.digest),
    digestMiBps: mibps(bytes, median(m.digest)),
    restoreMs: median(r.restore),
    verifyMs: median(r.verify),
    verifyMiBps: mibps(bytes, median(r.verify)),
    ddReadMs: median(r.ddR),
    verifiedRestoreVsPlain: ratio(median(r.restore) + median(r.verify), median(r.restore)),
  };
  opts.log(
    `verification mode, ${opts.sizeGiB} GiB, ${opts.channels} channels: save ${row.saveMs} ms (${row.saveVsDd}x dd) -> with digests ${row.saveWithDigestsMs} ms ` +
      `(${row.saveWithDigestsVsDd}x dd), VM paused ${row.vmPausedMs} -> ${row.vmPausedWithDigestsMs} ms; digest pass after the save ${row.digestMs} ms ` +
      `(${row.digestMiBps} MiB/s); restore ${row.restoreMs} ms + verify first ${row.verifyMs} ms (${row.verifyMiBps} MiB/s; dd read ${row.ddReadMs} ms)`,
  );
  return row;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const dir = process.env.VMSNAP_BENCH_DIR ?? '/var/tmp/vmsnap-bench';
  fs.mkdirSync(dir, { recursive: true });
  const row = await measureVerification({
    dir,
    sizeGiB: Number(process.env.VMSNAP_BENCH_VERIFY_GIB ?? 1),
    channels: 4,
    reps: Number(process.env.VMSNAP_BENCH_REPS ?? 3),
    log: (l) => console.log(l),
  });
  fs.writeFileSync(path.join(packageRoot(), 'bench/results/verify.json'), JSON.stringify({ date: new Date().toISOString(), ...row }, null, 2) + '\n');
  process.exit(0);
}
