// The VM pod's launcher as a host process around a real QEMU guest, driven the way the node
// agent drives it: the real CLI saves and restores over <run>/qmp.sock, the control socket
// restarts QEMU with -incoming defer in between. The guest's serial console is on QEMU's stdout,
// which the launcher passes through (as `kubectl logs` would show it), so the memory checks are
// read from the launcher's own stdout.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { findSetpriv } from '../../kit/qemu.js';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LauncherReplySchema, type LauncherReply } from '../../api/vm-pod.js';
import { badLines, guestArgs, passNumbers } from '../../kit/guest.js';
import { canRunAsPodUser, launcherRequest, podUserAssets, POD_UID, spawnLauncher } from './pod-fixture.js';
import { processAlive } from '../../agent/src/daemon/qemu-control.js';
import { cli, scratchDir, stopProcess } from './harness.js';
import { restoreVm } from '../../agent/src/engine/restore.js';
import { launcherRequest as agentLauncherRequest } from '../../agent/src/vm/launcher-client.js';
import type { LazyMapping } from '../../api/vm-pod.js';
import { procArgv } from '../../kit/qemu.js';
import { poll } from '../../kit/poll.js';

let dir: string;
let podArgv: string[];
const launchers: Launcher[] = [];

const asPodUser = canRunAsPodUser();

beforeAll(async () => {
  dir = scratchDir('launcher-pod');
  // The pod's command line: no -qmp (the launcher adds it), the serial console on stdio.
  podArgv = guestArgs(await podUserAssets(dir), { dir: '/nonexistent', memMiB: 256, fillMiB: 64, pod: { serial: 'stdio' } });
});

afterEach(async () => {
  for (const l of launchers.splice(0)) await l.kill();
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

interface Launcher {
  run: string;
  qmp: string;
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
  /** One request line, one reply line, on a fresh connection. */
  request(line: string): Promise<LauncherReply>;
  /** Raw bytes in, every reply line until the launcher closes or `ms` pass. */
  raw(data: string | Buffer, ms?: number): Promise<string>;
  /** `VMSNAP PASS n=K ok` numbers on the console from `from`. */
  passes(from?: number): number[];
  badLines(): string[];
  /** JSON event lines from stderr with this msg. */
  events(msg: string): Record<string, unknown>[];
  kill(): Promise<void>;
}

/**
 * Runs the launcher as a VM container would: unprivileged (uid POD_UID) when the test runs as
 * root, with a run directory only that user can enter. The snapshot CLI stays root, as the agent.
 */
function startLauncher(name: string, argv: string[], env: Record<string, string> = {}): Launcher {
  const run = path.join(dir, name);
  fs.mkdirSync(run, { recursive: true, mode: 0o700 });
  const child = spawnLauncher(run, argv, env);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('latin1').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const sockPath = path.join(run, 'launcher.sock');
  const launcher: Launcher = {
    run,
    qmp: path.join(run, 'qmp.sock'),
    child,
    exited,
    stdout: () => out,
    stderr: () => err,
    request: (line) => launcherRequest(sockPath, line),
    raw: (data, ms = 2_000) =>
      new Promise((resolve, reject) => {
        const sock = net.createConnection(sockPath);
        let buf = '';
        const done = () => {
          sock.destroy();
          resolve(buf);
        };
        const timer = setTimeout(done, ms);
        sock.setEncoding('utf8');
        sock.on('data', (d: string) => (buf += d));
        sock.on('close', () => {
          clearTimeout(timer);
          resolve(buf);
        });
        sock.on('error', (e: NodeJS.ErrnoException) => (e.code === 'EPIPE' || e.code === 'ECONNRESET' ? undefined : reject(e)));
        sock.write(data);
      }),
    passes: (from = 0) => passNumbers(out.slice(from)),
    badLines: () => badLines(out),
    events: (msg) =>
      err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((e) => e['msg'] === msg),
    kill: () => stopProcess(child, 15_000),
  };
  launchers.push(launcher);
  return launcher;
}

async function status(l: Launcher): Promise<Extract<LauncherReply, { ok: true }>> {
  const r = await l.request('{"op":"status"}');
  if (!r.ok) throw new Error(`status failed: ${r.error}`);
  return r;
}

/** Waits until the guest has filled its RAM and checked it once. */
async function guestReady(l: Launcher): Promise<void> {
  await poll('the guest\'s first memory check (VMSNAP PASS n=1)', () => l.passes().length > 0 || undefined, 180_000);
}

/**
 * Waits for two passing memory checks on the console after `from`, failing on any mismatch, and
 * makes sure they come from the restored guest, not a fresh boot (which would pass its checks
 * too): no boot banner, and the check counter continues from before the save.
 */
async function guestVerifiesAfter(l: Launcher, from: number, passesBeforeSave: number): Promise<void> {
  await poll('two passing memory checks after the restore', () => {
    if (l.badLines().length > 0) throw new Error(`guest memory check failed: ${l.badLines()[0]}`);
    return l.passes(from).length >= 2 || undefined;
  }, 90_000);
  expect(l.badLines()).toEqual([]);
  expect(l.stdout().slice(from)).not.toMatch(/VMSNAP (READY|INFO)/);
  expect(Math.min(...l.passes(from))).toBeGreaterThan(passesBeforeSave);
}

async function expectCli(args: string[]): Promise<Record<string, unknown>> {
  const r = await cli([...args, '--json']);
  if (r.code !== 0) throw new Error(`vmsnap-agent ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.json!;
}

test('restore in place: save, restart-incoming, restore; the guest keeps its memory; QEMU replaced once', async () => {
  const l = startLauncher('in-place', podArgv);
  await poll('QEMU running', async () => (fs.existsSync(l.run + '/launcher.sock') && (await status(l)).state === 'running') || undefined);
  const first = await status(l);
  expect(first).toMatchObject({ ok: true, state: 'running', generation: 1 });
  const pidA = first.qemuPid!;
  if (asPodUser) expect(fs.readFileSync(`/proc/${pidA}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${POD_UID}\\s+${POD_UID}\\s`, 'm'));
  expect(procArgv(pidA)).toEqual(
    expect.arrayContaining(['-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny']),
  );
  await guestReady(l);

  const file = path.join(dir, 'in-place.vmsnap');
  const passesBeforeSave = Math.max(...l.passes());
  await expectCli(['save', '--qmp', l.qmp, '--out', file]);

  const restarted = await l.request('{"op":"restart-incoming"}');
  expect(restarted).toMatchObject({ ok: true, state: 'incoming', generation: 2 });
  const pidB = (restarted as { qemuPid: number }).qemuPid;
  expect(pidB).not.toBe(pidA);
  expect(processAlive(pidA)).toBe(false);
  expect(procArgv(pidB)!.slice(-2)).toEqual(['-incoming', 'defer']);
  // The old QEMU is gone: everything on the console from here on comes from the restored guest.
  const from = l.stdout().length;

  await expectCli(['restore', '--in', file, '--qmp', l.qmp]);
  await guestVerifiesAfter(l, from, passesBeforeSave);

  expect(await status(l)).toMatchObject({ state: 'incoming', generation: 2, qemuPid: pidB });
  expect(l.events('qemu-started').map((e) => e['pid'])).toEqual([pidA, pidB]);

  l.child.kill('SIGTERM');
  expect(await l.exited).toBe(0);
  expect(processAlive(pidB)).toBe(false);
  expect(fs.existsSync(path.join(l.run, 'launcher.sock'))).toBe(false);
});

test('lazy restore in place: the agent passes the snapshot fd, the launcher maps the RAM from it; the guest keeps its memory', async () => {
  const l = startLauncher('lazy', podArgv);
  await guestReady(l);
  const { qemuPid: pidA } = await status(l);

  // As the agent keeps it: 0644 inside a root-owned 0700 directory that the pod's user cannot enter.
  const closed = path.join(dir, 'closed');
  fs.mkdirSync(closed, { mode: 0o700 });
  const file = path.join(closed, 'lazy.vmsnap');
  const passesBeforeSave = Math.max(...l.passes());
  await expectCli(['save', '--qmp', l.qmp, '--out', file]);
  fs.chmodSync(file, 0o644);

  let sent: LazyMapping | undefined;
  let pidB = 0;
  const from = l.stdout().length;
  const r = await restoreVm({
    inPath: file,
    qmpSocket: l.qmp,
    directIO: 'off',
    lazy: {
      prefetch: false,
      attach: {
        argv: podArgv,
        prepare: async (mapping) => {
          if (!mapping) throw new Error('the restore was not planned lazy');
          sent = mapping;
          const fd = fs.openSync(file, fs.constants.O_RDONLY);
          try {
            const reply = await agentLauncherRequest(net.createConnection(path.join(l.run, 'launcher.sock')), { op: 'restart-incoming', lazy: mapping }, 60_000, fd);
            expect(reply).toMatchObject({ state: 'incoming', generation: 2 });
            pidB = reply.qemuPid!;
          } finally {
            fs.closeSync(fd);
          }
        },
      },
    },
  });
  expect(r.mode).toBe('lazy');
  expect(r.lazy).toMatchObject({ file: fs.realpathSync(file), mappedBytes: 256 << 20 });
  expect(sent).toMatchObject({ sizeBytes: 256 << 20 });
  expect(pidB).not.toBe(pidA);
  expect(processAlive(pidA!)).toBe(false);
  // QEMU got the file as its fd 3 and mapped it from there; its user cannot open the path itself.
  const argv = procArgv(pidB)!;
  expect(argv).toEqual(expect.arrayContaining(['-incoming', 'defer']));
  expect(argv.join(' ')).toMatch(new RegExp(`memory-backend-file,id=${sent!.ramBackendId},size=${256 << 20},mem-path=/proc/self/fd/3,offset=${sent!.offset},share=off,readonly=on,rom=off`));
  expect(fs.readFileSync(`/proc/${pidB}/maps`, 'utf8')).toContain(fs.realpathSync(file));
  if (asPodUser) {
    expect(fs.readFileSync(`/proc/${pidB}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${POD_UID}\\s`, 'm'));
    const cat = spawnSync(findSetpriv()!, [`--reuid=${POD_UID}`, `--regid=${POD_UID}`, '--clear-groups', '--', 'head', '-c1', file]);
    expect(cat.status).not.toBe(0);
  }
  // The launcher closed its copy: only QEMU holds the file.
  const launcherFds = fs.readdirSync(`/proc/${l.child.pid}/fd`).map((fd) => {
    try {
      return fs.readlinkSync(`/proc/${l.child.pid}/fd/${fd}`);
    } catch {
      return '';
    }
  });
  expect(launcherFds).not.toContain(fs.realpathSync(file));
  await guestVerifiesAfter(l, from, passesBeforeSave);
  expect(l.events('qemu-started').map((e) => e['lazy'])).toEqual([undefined, true]);

  // Without the fd the launcher starts nothing.
  const noFd = await l.raw(JSON.stringify({ op: 'restart-incoming', lazy: sent }) + '\n', 11_000);
  expect(noFd.trim().split('\n').map((line) => JSON.parse(line) as LauncherReply)).toEqual([
    expect.objectContaining({ ok: true, awaitingFd: true }),
    { ok: false, error: expect.stringMatching(/no snapshot fd arrived/) },
  ]);
  expect(await status(l)).toMatchObject({ state: 'incoming', generation: 2, qemuPid: pidB });
});

test('hibernate and wake in the same pod: save --after stop leaves the launcher up in `stopped`', async () => {
  const l = startLauncher('hibernate', podArgv);
  await guestReady(l);
  const { qemuPid: pidA } = await status(l);

  const file = path.join(dir, 'hibernate.vmsnap');
  const passesBeforeSave = Math.max(...l.passes());
  await expectCli(['save', '--qmp', l.qmp, '--out', file, '--after', 'stop']);
  const stopped = await poll('state stopped', async () => {
    const s = await status(l);
    return s.state === 'stopped' ? s : undefined;
  });
  expect(stopped).toMatchObject({ generation: 1, lastExit: { code: 0, signal: null } });
  expect(stopped.qemuPid).toBeUndefined();
  expect(processAlive(pidA!)).toBe(false);
  expect(l.child.exitCode).toBeNull();

  const from = l.stdout().length;
  const restarted = await l.request('{"op":"restart-incoming"}');
  expect(restarted).toMatchObject({ ok: true, state: 'incoming', generation: 2 });
  await expectCli(['restore', '--in', file, '--qmp', l.qmp]);
  await guestVerifiesAfter(l, from, passesBeforeSave);

  // `start` with a QEMU there changes nothing.
  expect(await l.request('{"op":"start"}')).toMatchObject({ ok: true, generation: 2, qemuPid: (restarted as { qemuPid: number }).qemuPid });

  // A launcher killed outright takes its QEMU with it (parent-death signal), no orphan.
  const pidB = (restarted as { qemuPid: number }).qemuPid;
  l.child.kill('SIGKILL');
  await l.exited;
  await poll('QEMU to die with its launcher', () => !processAlive(pidB) || undefined, 10_000);
});

test('hostile control input gets error replies; the launcher keeps serving', async () => {
  // `wait`: no QEMU at start, as in a pod made for a wake; the protocol needs none.
  const l = startLauncher('hostile', podArgv, { VMSNAP_LAUNCHER_START: 'wait' });
  // The socket file exists from bind(), a moment before the launcher listens: wait for an answer.
  const first = await poll('the control socket to answer', async () => fs.existsSync(path.join(l.run, 'launcher.sock')) && status(l).catch(() => undefined));
  expect(first).toEqual({ ok: true, state: 'stopped', generation: 0 });

  const replies = (await l.raw('garbage\n{"op":"restart-incoming","argv":["sh"]}\n{"op":"status"}\n'))
    .trim()
    .split('\n')
    .map((line) => LauncherReplySchema.parse(JSON.parse(line)));
  expect(replies.map((r) => r.ok)).toEqual([false, false, true]);

  // 1 MiB without a newline: one error reply, then the launcher hangs up.
  const long = await l.raw(Buffer.alloc(1 << 20, 'a'), 5_000);
  expect(long.trim().split('\n').map((line) => JSON.parse(line))).toEqual([{ ok: false, error: expect.stringMatching(/longer than 65536 bytes/) }]);

  // Many clients at once, some hanging up mid-request.
  await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? l.raw('{"op":"sta', 200) : l.raw('{"op":"status"}\n', 500))));

  expect(l.child.exitCode).toBeNull();
  expect(await status(l)).toEqual({ ok: true, state: 'stopped', generation: 0 });
  expect(l.events('qemu-started')).toEqual([]);
});

test('a command line the launcher cannot own is refused with one line naming the option', async () => {
  for (const extra of [['-incoming', 'defer'], ['--daemonize']]) {
    const l = startLauncher('refused', [...podArgv, ...extra]);
    expect(await l.exited).toBe(2);
    expect(l.stderr().trim().split('\n')).toEqual([expect.stringContaining(`refusing the QEMU option ${extra[0]}`)]);
  }
});
