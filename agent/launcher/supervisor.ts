// Owns the QEMU process of this pod: which one runs, in what state, and the operations the
// control socket asks for. Operations that replace the process run one at a time; status reads
// never wait for them.
import fs from 'node:fs';
import type { DiskSwap, LauncherReply, LauncherState, LazyMapping } from '../../api/vm-pod.js';
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
  /** `inheritFd`: passed to QEMU as its fd 3 (a lazy restart's snapshot). */
  spawn(argv: readonly string[], inheritFd?: number): QemuProcess;
  stop(qemu: QemuProcess, graceMs: number): Promise<QemuExit>;
  log: Log;
}

type Status = Extract<LauncherReply, { ok: true }>;

/** A lazy restart: where the RAM lies in the snapshot, and the fd the agent sent (owned here: closed once QEMU has it). */
export interface LazyStart {
  mapping: LazyMapping;
  fd: number;
}

/**
 * Throws unless `fd` is a regular file holding `offset + sizeBytes` bytes: QEMU would map past
 * its end (SIGBUS on access) or be handed a socket or device.
 */
export function checkSnapshotFd(fd: number, m: LazyMapping): void {
  const st = fs.fstatSync(fd);
  if (!st.isFile()) throw new Error('the fd sent with restart-incoming is not a regular file');
  if (st.size < m.offset + m.sizeBytes) {
    throw new Error(`the snapshot sent with restart-incoming holds ${st.size} bytes, less than offset ${m.offset} + size ${m.sizeBytes}`);
  }
}

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
      if (!this.qemu) await this.launch(false, qemuArgv(this.deps.podArgv, this.deps.paths, { incoming: false }));
      return this.status();
    });
  }

  /**
   * Replaces whatever QEMU runs with a fresh one waiting for `migrate-incoming`; with `lazy`, its
   * main RAM mapped from the snapshot fd. The fd is closed here whatever happens.
   */
  restartIncoming(lazy?: LazyStart, disks?: DiskSwap[]): Promise<Status> {
    const owned: { fd?: number; lazy?: boolean } = { fd: lazy?.fd, lazy: !!lazy };
    return this.serially(async () => {
      if (lazy) checkSnapshotFd(lazy.fd, lazy.mapping);
      // Composed before the running QEMU is stopped: a command line that cannot map the RAM changes nothing.
      const argv = qemuArgv(this.deps.podArgv, this.deps.paths, { incoming: true, lazy: lazy?.mapping, disks });
      await this.stopCurrent('restart-incoming');
      await this.launch(true, argv, owned);
      return this.status();
    }).finally(() => closeOwned(owned));
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

  private async launch(incoming: boolean, argv: string[], owned: { fd?: number; lazy?: boolean } = {}): Promise<void> {
    const { paths, log } = this.deps;
    await removeStaleSocket(paths.qmpSocket);
    if (this.shuttingDown) throw new Error('the launcher is shutting down');
    let qemu: QemuProcess;
    try {
      qemu = this.deps.spawn(argv, owned.fd);
    } finally {
      // QEMU holds its own copy once spawned (spawn forks and execs before it returns).
      closeOwned(owned);
    }
    this.qemu = qemu;
    this.generation += 1;
    this.state = 'starting';
    const generation = this.generation;
    log('info', 'qemu-started', { pid: qemu.pid, generation, incoming, ...(owned.lazy ? { lazy: true } : {}) });
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

function closeOwned(owned: { fd?: number }): void {
  if (owned.fd === undefined) return;
  const fd = owned.fd;
  owned.fd = undefined;
  try {
    fs.closeSync(fd);
  } catch {
    /* already closed */
  }
}
