// The supervisor's states and operations with stand-in QEMU processes: each "QEMU" is a unix
// socket server at the QMP path, so readiness is checked the real way.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { runPaths, type RunPaths } from './argv.js';
import { stopQemu, type QemuExit, type QemuProcess } from './qemu-process.js';
import { Supervisor } from './supervisor.js';

interface FakeQemu extends QemuProcess {
  argv: readonly string[];
  /** What the fd handed to spawn referred to (inode), while spawn ran. */
  inherited?: number;
  /** The process ends on its own (a guest poweroff, a hibernate's quit). */
  exit(exit: QemuExit): void;
  signals: NodeJS.Signals[];
}

type Behaviour = 'listen' | 'die-at-once' | 'never-listen' | 'ignore-sigterm';

let dir: string;
let paths: RunPaths;
let spawned: FakeQemu[];
let behaviours: Behaviour[];
let events: string[];
let nextPid: number;

function fakeSpawn(argv: readonly string[], inheritFd?: number): QemuProcess {
  const behaviour = behaviours.shift() ?? 'listen';
  let resolveExit!: (e: QemuExit) => void;
  const exited = new Promise<QemuExit>((r) => (resolveExit = r));
  let done = false;
  let server: net.Server | undefined;
  const exit = (e: QemuExit) => {
    if (done) return;
    done = true;
    server?.close();
    resolveExit(e);
  };
  if (behaviour === 'listen' || behaviour === 'ignore-sigterm') {
    // Like QEMU: the socket appears a little after the process starts.
    setTimeout(() => {
      if (!done) server = net.createServer((s) => s.destroy()).listen(paths.qmpSocket);
    }, 20);
  }
  if (behaviour === 'die-at-once') setTimeout(() => exit({ code: 1, signal: null }), 5);
  const q: FakeQemu = {
    pid: nextPid++,
    argv,
    ...(inheritFd !== undefined ? { inherited: fs.fstatSync(inheritFd).ino } : {}),
    exited,
    signals: [],
    hasExited: () => done,
    exit,
    kill(signal) {
      q.signals.push(signal);
      if (signal === 'SIGKILL' || behaviour !== 'ignore-sigterm') setTimeout(() => exit({ code: null, signal }), 1);
    },
  };
  spawned.push(q);
  return q;
}

function supervisor(overrides: Partial<{ qmpReadyTimeoutMs: number; stopGraceMs: number }> = {}): Supervisor {
  return new Supervisor({
    paths,
    podArgv: ['qemu-system-x86_64', '-m', '64'],
    stopGraceMs: overrides.stopGraceMs ?? 1_000,
    qmpReadyTimeoutMs: overrides.qmpReadyTimeoutMs ?? 2_000,
    spawn: fakeSpawn,
    stop: stopQemu,
    log: (_level, msg) => events.push(msg),
  });
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'launcher-sup-'));
  paths = runPaths(dir);
  spawned = [];
  behaviours = [];
  events = [];
  nextPid = 100;
});

afterEach(() => {
  for (const q of spawned) q.exit({ code: null, signal: 'SIGKILL' });
  fs.rmSync(dir, { recursive: true, force: true });
});

test('start, then restart-incoming: the old QEMU is stopped before the new one starts', async () => {
  const s = supervisor();
  expect(s.status()).toEqual({ ok: true, state: 'stopped', generation: 0 });
  expect(await s.start()).toEqual({ ok: true, state: 'running', generation: 1, qemuPid: 100 });
  expect(spawned[0]!.argv).not.toContain('-incoming');

  const restarting = s.restartIncoming();
  const r = await restarting;
  expect(r).toEqual({ ok: true, state: 'incoming', generation: 2, qemuPid: 101, lastExit: { code: null, signal: 'SIGTERM' } });
  expect(spawned[0]!.signals).toEqual(['SIGTERM']);
  expect(spawned[1]!.argv.slice(-2)).toEqual(['-incoming', 'defer']);
  expect(events).toEqual(['qemu-started', 'qemu-ready', 'qemu-stopping', 'qemu-exited', 'qemu-started', 'qemu-ready']);
});

test('a lazy restart hands the snapshot fd to the new QEMU and closes it; a bad fd or command line changes nothing', async () => {
  const s = supervisor();
  await s.start();
  const file = path.join(dir, 'snapshot');
  fs.writeFileSync(file, Buffer.alloc(3 * 4096));
  const mapping = { ramBackendId: 'pc.ram', sizeBytes: 2 * 4096, offset: 4096 };

  // Too short for offset + size: refused before the running QEMU is touched; the fd is closed anyway.
  const short = fs.openSync(file, 'r');
  await expect(s.restartIncoming({ mapping: { ...mapping, offset: 2 * 4096 }, fd: short })).rejects.toThrow(/holds 12288 bytes, less than offset 8192 \+ size 8192/);
  // Closed (its number, if taken again meanwhile, refers to something else).
  const closed = (n: number) => {
    try {
      return fs.fstatSync(n).ino !== fs.statSync(file).ino;
    } catch {
      return true;
    }
  };
  expect(closed(short)).toBe(true);
  expect(s.status()).toMatchObject({ state: 'running', generation: 1 });

  const fd = fs.openSync(file, 'r');
  expect(await s.restartIncoming({ mapping, fd })).toMatchObject({ state: 'incoming', generation: 2 });
  expect(spawned[1]!.inherited).toBe(fs.statSync(file).ino);
  expect(spawned[1]!.argv.join(' ')).toContain('memory-backend-file,id=pc.ram,size=8192,mem-path=/proc/self/fd/3,offset=4096,share=off,readonly=on,rom=off');
  expect(closed(fd)).toBe(true);

  // Not a regular file.
  const dirFd = fs.openSync(dir, 'r');
  await expect(s.restartIncoming({ mapping, fd: dirFd })).rejects.toThrow(/not a regular file/);
  expect(s.status()).toMatchObject({ state: 'incoming', generation: 2 });
});

test('status answers at once while a restart waits for QMP, and says starting', async () => {
  const s = supervisor();
  const restarting = s.restartIncoming();
  await new Promise((r) => setTimeout(r, 5));
  expect(s.status()).toMatchObject({ state: 'starting', generation: 1, qemuPid: 100 });
  await restarting;
  expect(s.status().state).toBe('incoming');
});

test('a QEMU that exits on its own leaves the launcher in stopped; start brings one back', async () => {
  const s = supervisor();
  await s.start();
  spawned[0]!.exit({ code: 0, signal: null });
  await spawned[0]!.exited;
  expect(s.status()).toEqual({ ok: true, state: 'stopped', generation: 1, lastExit: { code: 0, signal: null } });
  expect(await s.start()).toMatchObject({ state: 'running', generation: 2, qemuPid: 101 });
  // With one running, start changes nothing.
  expect(await s.start()).toMatchObject({ state: 'running', generation: 2, qemuPid: 101 });
  expect(spawned).toHaveLength(2);
});

test('a QEMU that dies before its QMP socket answers fails the request and leaves stopped', async () => {
  const s = supervisor();
  behaviours = ['die-at-once'];
  await expect(s.restartIncoming()).rejects.toThrow(/QEMU exited before its QMP socket .* accepted a connection/);
  expect(s.status()).toMatchObject({ state: 'stopped', lastExit: { code: 1 } });
  // The next request is not stuck behind the failed one.
  expect(await s.restartIncoming()).toMatchObject({ state: 'incoming', generation: 2 });
});

test('a QEMU whose QMP never answers is stopped after the ready timeout', async () => {
  const s = supervisor({ qmpReadyTimeoutMs: 200 });
  behaviours = ['never-listen'];
  await expect(s.start()).rejects.toThrow(/accepted no connection within 200 ms/);
  expect(spawned[0]!.hasExited()).toBe(true);
  expect(s.status().state).toBe('stopped');
});

test('a QEMU that ignores SIGTERM gets SIGKILL after the grace period', async () => {
  const s = supervisor({ stopGraceMs: 100 });
  behaviours = ['ignore-sigterm'];
  await s.start();
  await s.restartIncoming();
  expect(spawned[0]!.signals).toEqual(['SIGTERM', 'SIGKILL']);
});

test('concurrent restarts run one after the other', async () => {
  const s = supervisor();
  const [a, b] = await Promise.all([s.restartIncoming(), s.restartIncoming()]);
  expect([a.generation, b.generation]).toEqual([1, 2]);
  expect(spawned[0]!.hasExited()).toBe(true);
  expect(spawned[1]!.hasExited()).toBe(false);
});

test('shutdown stops QEMU, also one still starting, and refuses later operations', async () => {
  const s = supervisor();
  const starting = s.start().catch((e: Error) => e);
  await new Promise((r) => setTimeout(r, 5));
  await s.shutdown();
  expect(await starting).toBeInstanceOf(Error);
  expect(spawned.every((q) => q.hasExited())).toBe(true);
  await expect(s.restartIncoming()).rejects.toThrow(/shutting down/);
  expect(spawned).toHaveLength(1);
});

test('a stale QMP socket from an earlier container is removed before QEMU starts', async () => {
  // A process killed while listening leaves its socket file behind, as a dead QEMU would.
  const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(paths.qmpSocket)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  expect(r.signal).toBe('SIGKILL');
  expect(fs.lstatSync(paths.qmpSocket).isSocket()).toBe(true);
  expect(await supervisor().start()).toMatchObject({ state: 'running' });
});

test('a QMP socket something still listens on, or a directory there, is not removed', async () => {
  const other = net.createServer().listen(paths.qmpSocket);
  await new Promise((r) => other.once('listening', r));
  try {
    await expect(supervisor().start()).rejects.toThrow(/in use by another process/);
  } finally {
    await new Promise((r) => other.close(r));
  }
  fs.mkdirSync(paths.qmpSocket);
  await expect(supervisor().start()).rejects.toThrow(/is a directory/);
  expect(spawned).toHaveLength(0);
});
