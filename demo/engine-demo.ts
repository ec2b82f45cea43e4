// `npm run demo`: boots a demo VM that fills its memory with a known pattern
// and keeps checking it, hibernates it to a snapshot file (live progress),
// launches it again from the file, shows the guest going on intact, and
// leaves the restored VM running.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { saveVm } from '../agent/src/engine/save.js';
import { restoreVm } from '../agent/src/engine/restore.js';
import type { Progress } from '../agent/src/engine/migration.js';
import { startGuest } from '../kit/guest.js';
import { waitForLine } from './serial.js';

const MEM_MIB = Number(process.env.VMSNAP_DEMO_MEM_MIB ?? 512);
const FILL_MIB = Number(process.env.VMSNAP_DEMO_FILL_MIB ?? 256);
const stateDir = path.join(process.env.VMSNAP_STATE ?? path.join(os.homedir(), '.local/state/vmsnap'), 'demo');
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

function bar(label: string): (p: Progress) => void {
  let lastStep = -1;
  return (p) => {
    const mibps = p.elapsedMs > 0 ? p.transferredBytes / (1 << 20) / (p.elapsedMs / 1000) : 0;
    const filled = Math.round(p.percent / 5);
    const line = `${label} [${'#'.repeat(filled)}${'.'.repeat(20 - filled)}] ${p.percent.toFixed(0).padStart(3)}%  ` +
      `${(p.bytesDone / (1 << 20)).toFixed(0)}/${(p.bytesTotal / (1 << 20)).toFixed(0)} MiB  ${mibps.toFixed(0)} MiB/s`;
    if (process.stdout.isTTY) process.stdout.write(`\r${line}`);
    else if (Math.floor(p.percent / 25) !== lastStep) console.log(line);
    lastStep = Math.floor(p.percent / 25);
  };
}

async function main(): Promise<void> {
  // A previous demo's VM may still run: stop it so the socket is free.
  const pidFile = path.join(stateDir, 'restored.pid');
  if (fs.existsSync(pidFile)) {
    try {
      process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  fs.rmSync(stateDir, { recursive: true, force: true });
  const vmDir = path.join(stateDir, 'vm');
  console.log(bold(`1. booting the demo VM (${MEM_MIB} MiB RAM, TCG); its init fills ${FILL_MIB} MiB with a pattern and re-checks it`));
  const t0 = Date.now();
  const guest = await startGuest({ dir: vmDir, name: 'demo', memMiB: MEM_MIB, fillMiB: FILL_MIB, seed: 7 });
  await guest.waitForSerial(/VMSNAP PASS n=2 ok/, 180_000);
  console.log(`   guest ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; serial console: ${guest.serialPath}`);

  const file = path.join(stateDir, 'demo.vms');
  console.log(bold(`2. hibernating it: mapped-ram + 4 multifd channels + O_DIRECT to ${file}`));
  const saved = await saveVm({ qmpSocket: guest.qmpPath, outPath: file, channels: 4, directIO: 'auto', after: 'stop', live: false, onProgress: bar('   save') });
  if (process.stdout.isTTY) process.stdout.write('\n');
  await guest.exited;
  const passBefore = guest.lastPass();
  console.log(`   saved ${(saved.bytes / (1 << 20)).toFixed(0)} MiB in ${saved.durationMs} ms (${saved.throughputMiBps} MiB/s), direct I/O ${saved.directIO ? 'on' : `off (${saved.directIOReason})`}; QEMU exited`);

  console.log(bold('3. restoring: launching QEMU from the command line recorded in the snapshot'));
  const serialOffset = guest.serialText().length;
  const restored = await restoreVm({ inPath: file, qmpSocket: guest.qmpPath, directIO: 'auto', launch: true });
  fs.writeFileSync(pidFile, String(restored.launched!.pid));
  console.log(`   restored in ${restored.durationMs} ms (${restored.throughputMiBps} MiB/s); QEMU pid ${restored.launched!.pid}`);

  console.log(bold('4. checking the guest: it must go on verifying its memory where it left off'));
  // The first QEMU has exited: read the serial log that the relaunched one appends to.
  const match = await waitForLine(guest.serialPath, serialOffset, /VMSNAP (PASS n=(\d+) ok|BAD[^\r\n]*)/, 60_000);
  if (match[1]!.startsWith('BAD')) throw new Error(`the restored guest found damaged memory: ${match[1]}`);
  console.log(`   last check before the save: pass ${passBefore}; first check after the restore: pass ${match[2]} ok (${FILL_MIB} MiB intact)`);

  console.log(bold('\nsummary'));
  console.log(`   save ${saved.durationMs} ms, VM paused ${saved.vmPausedMs} ms, file ${(saved.allocatedBytes / (1 << 20)).toFixed(0)} MiB on disk (${(saved.logicalBytes / (1 << 20)).toFixed(0)} MiB logical)`);
  console.log(`   restore ${restored.durationMs} ms`);
  console.log(`\nThe restored VM keeps running (pid ${restored.launched!.pid}). Try:`);
  console.log(`   npx vmsnap-agent inspect ${file}`);
  console.log(`   tail -f ${guest.serialPath}`);
  console.log(`   npx vmsnap-agent save --qmp ${guest.qmpPath} --out /var/tmp/again.vms --live`);
  console.log(`Stop it with: kill ${restored.launched!.pid}`);
}

try {
  await main();
  process.exit(0);
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
}
