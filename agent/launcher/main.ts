// vmsnap launcher: the VM container's entry point (`node dist/agent/launcher/main.js <qemu argv>`).
// It owns the pod's QEMU: starts it from the container's args plus the QMP socket and sandbox the
// launcher adds, restarts it with `-incoming defer` when the node agent asks over the control
// socket, and stays up after QEMU exits (a hibernate) so that a restore can use the same pod.
import { closeSync, mkdirSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:net';
import { checkPodCommandLine, CommandLineError } from './argv.js';
import { ConfigError, launcherConfig } from './config.js';
import { startControlServer } from './control-server.js';
import { log } from './log.js';
import { findSetpriv, spawnQemu, stopQemu } from './qemu-process.js';
import { removeStaleSocket } from './sockets.js';
import { Supervisor } from './supervisor.js';

async function main(): Promise<void> {
  const podArgv = process.argv.slice(2);
  let config;
  try {
    config = launcherConfig(process.env);
    checkPodCommandLine(podArgv, config.paths, process.cwd());
  } catch (err) {
    if (err instanceof CommandLineError || err instanceof ConfigError) {
      process.stderr.write(`vmsnap-launcher: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const { paths } = config;
  mkdirSync(paths.runDir, { recursive: true, mode: 0o700 });

  const supervisor = new Supervisor({
    paths,
    podArgv,
    stopGraceMs: config.stopGraceMs,
    qmpReadyTimeoutMs: config.qmpReadyTimeoutMs,
    spawn: spawnQemu,
    stop: stopQemu,
    log,
  });
  // If the launcher crashes, QEMU goes with it (setpriv's parent-death signal covers SIGKILL).
  process.on('exit', () => supervisor.killNow());
  process.on('uncaughtException', (err) => {
    log('error', 'launcher-crashed', { error: err.stack ?? String(err) });
    process.exit(1);
  });

  await removeStaleSocket(paths.launcherSocket);
  const server: Server = await startControlServer(
    paths.launcherSocket,
    async (req, fd) => {
      if (fd !== undefined && (req.op !== 'restart-incoming' || !req.lazy)) {
        closeSync(fd);
        throw new Error(`${req.op} takes no fd`);
      }
      switch (req.op) {
        case 'status':
          return supervisor.status();
        case 'start':
          return supervisor.start();
        case 'restart-incoming':
          if (req.lazy && fd === undefined) throw new Error('a lazy restart-incoming needs the snapshot fd');
          return supervisor.restartIncoming(req.lazy && fd !== undefined ? { mapping: req.lazy, fd } : undefined, req.disks);
      }
    },
    log,
  );
  log('info', 'launcher-ready', {
    runDir: paths.runDir,
    start: config.start,
    parentDeathSignal: findSetpriv() !== null,
    qemu: podArgv[0],
  });

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log('info', 'launcher-stopping', { signal });
    void (async () => {
      await supervisor.shutdown();
      server.close();
      try {
        unlinkSync(paths.launcherSocket);
      } catch {
        /* already gone */
      }
      log('info', 'launcher-stopped', {});
      process.exit(0);
    })();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  if (config.start === 'run') {
    // A QEMU that fails to start is logged and leaves the launcher in `stopped`, as after any
    // exit: the pod stays for the agent, and `kubectl logs` shows QEMU's own error.
    supervisor.start().catch((err: unknown) => log('error', 'qemu-start-failed', { error: err instanceof Error ? err.message : String(err) }));
  } else if (config.start === 'incoming') {
    supervisor.restartIncoming().catch((err: unknown) => log('error', 'qemu-start-failed', { error: err instanceof Error ? err.message : String(err) }));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`vmsnap-launcher: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
