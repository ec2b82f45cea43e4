// A lazy restore is done in milliseconds once QEMU runs, so starting QEMU is
// most of it, and so is loading the code that checks the file (zod) and the
// check itself. Both start together: QEMU is launched from the CRC-checked
// header as soon as it is read, while the file is checked in full; a file that
// fails the check quits that QEMU before anything is loaded into it. With the
// agent's trust the header's MAC and VMSnapshot identity are checked before
// anything of it is used (a few microseconds; no zod needed).
import fs from 'node:fs';
import { relaunchArgv, startQemu, type ArgvRewrite, type LaunchedQemu } from '../launch.js';
import { readMappedRamLayout } from '../../snapshot-file/mapped-ram.js';
import type { SnapshotMetadata } from '../../snapshot-file/metadata.js';
import type { HeaderTrust } from '../../snapshot-file/header.js';
import { readRawHeader } from '../../snapshot-file/raw-header.js';
import { decideLazy } from './decide.js';

export interface EarlyLaunch {
  argv: string[];
  launching: Promise<LaunchedQemu>;
}

/**
 * Starts the lazy QEMU from the raw header, or returns undefined whenever that
 * is not clearly possible (the normal path then decides and reports). Resolves
 * once the process exists, so QEMU initialises while the caller checks the file.
 */
export async function earlyLazyLaunch(opts: {
  inPath: string;
  qmpSocket: string;
  rewrite?: ArgvRewrite;
  env?: Record<string, string>;
  logPath?: string;
  trust?: HeaderTrust;
}): Promise<EarlyLaunch | undefined> {
  try {
    const raw = readRawHeader(opts.inPath, opts.trust);
    if (raw.state !== 'complete') return undefined;
    const meta = raw.metadata as SnapshotMetadata;
    // Disks need their restore overlays made first: such a VM takes the normal path.
    if (meta.disks?.length) return undefined;
    // Only the main block decides (normally the first): the full walk happens in the file check, beside QEMU's start.
    const layout = readMappedRamLayout(opts.inPath, raw.streamOffset, { countPages: false, until: meta.ram?.mainBlockId });
    const relaunched = relaunchArgv(meta.qemu.argv, meta.vm.qmpSocket, opts.qmpSocket, [], opts.rewrite);
    const decision = decideLazy({ header: { metadata: meta }, layout }, fs.realpathSync(opts.inPath), relaunched);
    if (!decision.lazy) return undefined;
    const { ready } = await startQemu({ argv: decision.argv, qmpSocket: opts.qmpSocket, cwd: meta.qemu.cwd, env: opts.env, logPath: opts.logPath });
    ready.catch(() => undefined); // awaited (or abandoned) by the caller
    return { argv: decision.argv, launching: ready };
  } catch {
    return undefined;
  }
}

/** Quits an early QEMU that will not be used; it has loaded nothing. */
export async function abandonEarlyLaunch(early: EarlyLaunch | undefined): Promise<void> {
  if (!early) return;
  const q = await early.launching.catch(() => undefined);
  if (!q) return;
  await q.client.execute('quit').catch(() => undefined);
  await q.client.waitClosed(5_000);
  q.client.close();
}
