// vmsnap-agent's commands: the node engine without Kubernetes. Exit 0 only on
// success; on failure one line on stderr that says what went wrong. Entry
// points: main.ts (plain Node) and snapshot-entry.ts (a Node start-up snapshot).
import { traceStep } from '../clock.js';
import { parseCommand, USAGE, UsageError, type Command } from './args.js';
import { progressPrinter } from './progress.js';

async function run(cmd: Command): Promise<void> {
  switch (cmd.kind) {
    case 'help':
      process.stdout.write(USAGE + '\n');
      return;
    case 'save': {
      const { saveVm } = await import('../engine/save.js');
      const abort = new AbortController();
      const onSignal = () => abort.abort(new Error('the save was interrupted by a signal; the VM was resumed and the partial file removed'));
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const progress = cmd.json ? undefined : progressPrinter('save');
      const r = await saveVm({
        qmpSocket: cmd.qmp,
        outPath: cmd.out,
        channels: cmd.channels,
        directIO: cmd.directIO,
        after: cmd.after,
        live: cmd.live,
        overwrite: cmd.force,
        onProgress: progress?.update,
        signal: abort.signal,
        digest: cmd.digest,
      });
      if (r.digests && 'error' in r.digests) process.stderr.write(`vmsnap-agent: warning: ${r.digests.error}\n`);
      progress?.done();
      if (cmd.json) {
        print(r);
      } else {
        process.stdout.write(
          `saved ${mib(r.bytes)} MiB of ${mib(r.ramBytes)} MiB RAM to ${r.path} in ${r.durationMs} ms ` +
            `(${r.throughputMiBps} MiB/s, ${r.channels} channels, direct I/O ${r.directIO ? 'on' : `off: ${r.directIOReason}`}); ` +
            `VM paused ${r.vmPausedMs} ms` +
            (r.capture ? ` (live, ${r.capture.convergence}${r.capture.cpuThrottlePeakPercent ? `, vCPUs throttled up to ${r.capture.cpuThrottlePeakPercent}%` : ''})` : '') +
            `; VM ${r.after === 'stop' ? 'stopped' : 'resumed'}` +
            `${r.disks.length > 0 ? `; ${r.disks.length} disk(s) frozen (${r.after === 'stop' ? 'as they are' : `${r.diskFreezeMs.toFixed(1)} ms`})` : ''}` +
            (r.digests && 'path' in r.digests ? `; RAM digests (${r.digests.algorithm}) in ${r.digests.path} after ${r.digests.durationMs} ms more` : '') +
            '\n',
        );
      }
      return;
    }
    case 'restore': {
      // Starting QEMU is most of a lazy restore: it starts before the rest of the engine loads.
      const early = cmd.lazy && cmd.launch ? await (await import('../engine/lazy/early-launch.js')).earlyLazyLaunch({ inPath: cmd.in, qmpSocket: cmd.qmp }) : undefined;
      const { restoreVm } = await import('../engine/restore.js');
      const r = await restoreVm({
        inPath: cmd.in,
        qmpSocket: cmd.qmp,
        channels: cmd.channels,
        directIO: cmd.directIO,
        launch: cmd.launch,
        paused: cmd.paused,
        verify: cmd.verify,
        lazy: cmd.lazy ? { prefetch: cmd.prefetch } : undefined,
        early,
      });
      if (cmd.json) {
        print(r);
      } else if (r.lazy) {
        process.stdout.write(
          `restored lazily from ${r.path} in ${r.durationMs} ms: ${mib(r.lazy.mappedBytes)} MiB of RAM (${r.lazy.blockId}) mapped from the file, ` +
            `${mib(r.bytes)} MiB loaded; prefetch ${r.lazy.prefetch === 'off' ? 'off' : r.lazy.prefetch.pid ? `running (pid ${r.lazy.prefetch.pid})` : `not started: ${r.lazy.prefetch.reason}`}; ` +
            `VM ${r.running ? 'running' : 'paused'}${r.launched ? `; QEMU pid ${r.launched.pid}, log ${r.launched.logPath}` : ''}\n`,
        );
      } else {
        if (r.lazyFallbackReason) process.stderr.write(`vmsnap-agent: a lazy restore is not possible (${r.lazyFallbackReason}); restoring eagerly\n`);
        process.stdout.write(
          `restored ${mib(r.bytes)} MiB from ${r.path} in ${r.durationMs} ms (${r.throughputMiBps} MiB/s, ${r.channels} channels, ` +
            `direct I/O ${r.directIO ? 'on' : `off: ${r.directIOReason}`}); VM ${r.running ? 'running' : 'paused'}` +
            `${r.launched ? `; QEMU pid ${r.launched.pid}, log ${r.launched.logPath}` : ''}` +
            `${r.verified ? `; RAM verified (${r.verified.algorithm}, ${r.verified.regions} regions) in ${r.verified.durationMs} ms first` : ''}\n`,
        );
      }
      return;
    }
    case 'daemon': {
      // The Kubernetes client is loaded only here: the engine commands stay quick to start.
      const { runDaemon } = await import('../daemon/daemon.js');
      await runDaemon({ configPath: cmd.config });
      return;
    }
    case 'inspect': {
      // Each command loads only what it needs: start-up time counts for saves.
      const { formatInspect, inspectSnapshot } = await import('./inspect.js');
      const report = await inspectSnapshot(cmd.file, { verify: cmd.verify });
      if (cmd.json) print(report);
      else process.stdout.write(formatInspect(report));
      return;
    }
  }
}

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(1);
}

function print(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** Runs one command line (argv without node and script) and exits the process. */
export async function main(argv: string[]): Promise<never> {
  try {
    traceStep(`start (${process.execArgv.includes('--snapshot-blob') ? 'start-up snapshot' : 'plain node'})`);
    await run(parseCommand(argv));
    traceStep('done');
    process.exit(0);
  } catch (err) {
    const e = err as Error;
    const reason = e.message.split('\n')[0];
    process.stderr.write(`vmsnap-agent: ${reason}${e instanceof UsageError ? ' (see: vmsnap-agent help)' : ''}\n`);
    if (process.env.VMSNAP_DEBUG && e.stack) process.stderr.write(e.stack + '\n');
    process.exit(e instanceof UsageError ? 2 : 1);
  }
}
