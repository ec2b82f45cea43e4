// An eager restore of another node's snapshot launches its QEMU (-incoming defer) while the rest
// of the snapshot downloads, from the header of the first part to arrive (checked against the
// manifest and naming the VMSnapshot: fetch.ts headerOfFirstPart). The restore then loads into it
// once the whole copy checked out, or quits it: restoreVm uses it only when the checked header
// gives the same command line, and a failed or cancelled download quits it with the rest of the
// restore's clean-ups. Only where the restore would launch exactly that QEMU anyway.
import { relaunchArgv, startQemu, type ArgvRewrite } from '../engine/launch.js';
import { abandonEarlyLaunch, type EarlyLaunch } from '../engine/lazy/early-launch.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';
import { traceStep } from '../clock.js';
import { probeQmp } from './qemu-control.js';

/** Why the restore does not launch QEMU during the download (undefined: it does). Pure. */
export function whyNotEarly(f: { lazy: boolean; disks: number; target: 'absent' | 'answers' | 'unreachable' }): string | undefined {
  // A lazy restore starts its QEMU from the checked file's mapping, beside the file check (restoreVm).
  if (f.lazy) return 'a lazy restore';
  // The disks' restore overlays are made from the checked header before QEMU starts.
  if (f.disks > 0) return 'the VM has writable disks';
  // A VM at the target is refused or replaced once the whole file checked out, never before.
  if (f.target !== 'absent') return 'a QEMU is at the target socket';
  return undefined;
}

export interface EarlyStarted {
  targetSocket: string;
  launch: EarlyLaunch;
}

export interface EarlyQemu {
  /** fetchSnapshot's onHeader: starts QEMU once (when whyNotEarly allows). */
  onHeader(header: { metadata: SnapshotMetadata }): void;
  /** The QEMU started, once its start was attempted; undefined when none was. */
  started(): Promise<EarlyStarted | undefined>;
  /** Quits it (a QEMU that loaded nothing); harmless when there is none or it is gone. */
  abandon(): Promise<void>;
}

export function earlyQemu(opts: {
  lazy: boolean;
  /** Where the restore launches (the runner's targetOf). */
  target(meta: SnapshotMetadata): Promise<{ targetSocket: string; rewrite?: ArgvRewrite }>;
  /** The relaunch's environment and log, as the runner passes them to restoreVm. */
  env: Record<string, string>;
  logPath: string;
  /** For the agent's log. */
  onStarted(targetSocket: string): void;
  onSkipped(reason: string): void;
}): EarlyQemu {
  let attempt: Promise<EarlyStarted | undefined> | undefined;
  const start = async (meta: SnapshotMetadata): Promise<EarlyStarted | undefined> => {
    const { targetSocket, rewrite } = await opts.target(meta);
    const probe = await probeQmp(targetSocket, 1000);
    if (probe.kind === 'answers') probe.client.close();
    const why = whyNotEarly({ lazy: opts.lazy, disks: meta.disks?.length ?? 0, target: probe.kind });
    if (why) {
      opts.onSkipped(why);
      return undefined;
    }
    // What restoreVm launches for an eager restore without disks (planRestore's relaunch).
    const argv = relaunchArgv(meta.qemu.argv, meta.vm.qmpSocket, targetSocket, [], { ...rewrite, disks: [] });
    const { ready } = await startQemu({ argv, qmpSocket: targetSocket, cwd: meta.qemu.cwd, env: opts.env, logPath: opts.logPath });
    ready.catch(() => undefined); // awaited by restoreVm, or abandoned
    traceStep('agent: QEMU started during the download');
    opts.onStarted(targetSocket);
    return { targetSocket, launch: { argv, launching: ready } };
  };
  return {
    onHeader: (header) => {
      attempt ??= start(header.metadata).catch((err: Error) => {
        opts.onSkipped(err.message);
        return undefined;
      });
    },
    started: () => attempt ?? Promise.resolve(undefined),
    abandon: async () => abandonEarlyLaunch((await attempt)?.launch),
  };
}
