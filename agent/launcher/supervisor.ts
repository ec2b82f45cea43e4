// Owns the QEMU process of this pod: which one runs, in what state, and the operations the
// control socket asks for. Operations that replace the process run one at a time; status reads
// never wait for them.
import type { LauncherReply, LauncherState } from '../../api/vm-pod.js';
import { qemuArgv, type RunPaths } from './argv.js';
import type { Log } from './log.js';
import type { QemuExit, QemuProcess } from './qemu-process.js';
import { removeStaleSocket, waitForListening } from './sockets.js';

export interface SupervisorDeps {
  paths: RunPaths;
  /** The pod's QEMU command line, already checked. */
  podArgv: readonly string[];
  stopGraceMs: number;
  qmpReadyTimeoutMs: number;
  spawn(argv: readonly string[]): QemuProcess;
  stop(qemu: QemuProcess, graceMs: number): Promise<QemuExit>;
  log: Log;
}

type Status = Extract<LauncherReply, { ok: true }>;

export class Supervisor {
  private qemu: QemuProcess | undefined;
  private state: LauncherState = 'stopped';
  private generation = 0;
  private lastExit: QemuExit | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private shuttingDown = false;

  constructor(private readonly deps: SupervisorDeps) {}

  status(): Status {
    return {
      ok: true,
      state: this.state,
      generation: this.generation,
      ...(this.qemu && this.qemu.pid > 0 ? { qemuPid: this.qemu.pid } : {}),
      ...(this.lastExit ? { lastExit: { code: this.lastExit.code, signal: this.lastExit.signal } } : {}),
    };
  }

  /** Starts QEMU from the pod's command line unless one is there already. */
  start(): Promise<Status> {
    return this.serially(async () => {
      if (!this.qemu) await this.launch(false);
      return this.status();
    });
  }

  /** Replaces whatever QEMU runs with a fresh one waiting for `migrate-incoming`. */
  restartIncoming(): Promise<Status> {
    return this.serially(async () => {
      await this.stopCurrent('restart-incoming');
      await this.launch(true);
      return this.status();
    });
  }

  /** Stops QEMU for good: no operation starts one afterwards. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    // Stop the current QEMU now: an operation waiting for its QMP socket then fails fast
    // instead of holding the queue for the whole ready timeout.
    await this.stopCurrent('launcher stopping');
    await this.queue.catch(() => undefined);
    await this.stopCurrent('launcher stopping');
  }

  /** Last resort on a crashing launcher: synchronous, no waiting. */
  killNow(): void {
    this.qemu?.kill('SIGKILL');
  }

  private serially<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      if (this.shuttingDown) throw new Error('the launcher is shutting down');
      return op();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async launch(incoming: boolean): Promise<void> {
    const { paths, log } = this.deps;
    await removeStaleSocket(paths.qmpSocket);
    if (this.shuttingDown) throw new Error('the launcher is shutting down');
    const argv = qemuArgv(this.deps.podArgv, paths, { incoming });
    const qemu = this.deps.spawn(argv);
    this.qemu = qemu;
    this.generation += 1;
    this.state = 'starting';
    const generation = this.generation;
    log('info', 'qemu-started', { pid: qemu.pid, generation, incoming });
    void qemu.exited.then((exit) => this.onExit(qemu, generation, exit));
    try {
      await waitForListening(paths.qmpSocket, this.deps.qmpReadyTimeoutMs, qemu.exited);
    } catch (err) {
      // A QEMU that never became reachable is of no use to the agent: do not leave it behind.
      if (!qemu.hasExited()) await this.deps.stop(qemu, this.deps.stopGraceMs);
      throw err;
    }
    if (this.qemu === qemu) this.state = incoming ? 'incoming' : 'running';
    log('info', 'qemu-ready', { pid: qemu.pid, generation, state: this.state });
  }

  private async stopCurrent(reason: string): Promise<void> {
    const qemu = this.qemu;
    if (!qemu) return;
    this.deps.log('info', 'qemu-stopping', { pid: qemu.pid, generation: this.generation, reason });
    await this.deps.stop(qemu, this.deps.stopGraceMs);
    // onExit has run by now: it is chained on the same `exited` promise, before this await.
  }

  private onExit(qemu: QemuProcess, generation: number, exit: QemuExit): void {
    if (this.qemu === qemu) {
      this.qemu = undefined;
      this.state = 'stopped';
      this.lastExit = exit;
    }
    this.deps.log(exit.code === 0 ? 'info' : 'warn', 'qemu-exited', { pid: qemu.pid, generation, code: exit.code, signal: exit.signal });
  }
}
