import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launchQemu, LaunchError, openLaunchLog, optionName, relaunchArgv, relaunchEnv } from './launch.js';
import { mainRamBlockId } from './qemu-info.js';

describe('relaunchArgv', () => {
  const recorded = ['qemu-system-x86_64', '-m', '256', '-S', '-qmp', 'unix:/vms/a/qmp.sock,server=on,wait=off', '-incoming', 'tcp:0:4444', '-daemonize'];

  it('points the QMP socket at the new path and waits for an incoming restore', () => {
    expect(relaunchArgv(recorded, '/vms/a/qmp.sock', '/vms/b/qmp.sock')).toEqual([
      'qemu-system-x86_64', '-m', '256', '-qmp', 'unix:/vms/b/qmp.sock,server=on,wait=off', '-S', '-incoming', 'defer',
    ]);
  });

  it('rewrites a chardev-based monitor too', () => {
    const argv = ['qemu', '-chardev', 'socket,id=mon,path=/old.sock,server=on,wait=off', '-mon', 'chardev=mon,mode=control'];
    expect(relaunchArgv(argv, '/old.sock', '/new.sock')).toContain('socket,id=mon,path=/new.sock,server=on,wait=off');
  });

  it('adds a QMP socket when the recorded line has none for the new path', () => {
    expect(relaunchArgv(['qemu', '-m', '64'], '/x.sock', '/y.sock')).toEqual(['qemu', '-m', '64', '-qmp', 'unix:/y.sock,server=on,wait=off', '-S', '-incoming', 'defer']);
  });

  it('moves a copy into its own directory and renames it', () => {
    const argv = [
      'qemu', '-name', 'guest=demo,debug-threads=on',
      '-chardev', 'file,id=s0,path=/vms/ns/demo/serial.log,append=on',
      '-object', 'memory-backend-file,id=pc.ram,size=64M,mem-path=/vms/ns/demo/ram,share=on',
      '-pidfile', '/vms/ns/demo',
      '-qmp', 'unix:/vms/ns/demo/qmp.sock,server=on,wait=off',
      '-drive', 'file=/vms/ns/demo-disk.img', '-serial', 'file:/old/vms/ns/demo/x',
    ];
    const out = relaunchArgv(argv, '/vms/ns/demo/qmp.sock', '/vms/ns/copy/qmp.sock', [], { paths: [['/vms/ns/demo', '/vms/ns/copy']], name: 'copy' });
    expect(out).toEqual([
      'qemu', '-name', 'guest=copy,debug-threads=on',
      '-chardev', 'file,id=s0,path=/vms/ns/copy/serial.log,append=on',
      '-object', 'memory-backend-file,id=pc.ram,size=64M,mem-path=/vms/ns/copy/ram,share=on',
      '-pidfile', '/vms/ns/copy',
      '-qmp', 'unix:/vms/ns/copy/qmp.sock,server=on,wait=off',
      '-drive', 'file=/vms/ns/demo-disk.img', '-serial', 'file:/old/vms/ns/demo/x',
      '-S', '-incoming', 'defer',
    ]);
    expect(relaunchArgv(['qemu', '-name', 'demo'], '/a', '/b', [], { name: 'copy' }).slice(0, 3)).toEqual(['qemu', '-name', 'copy']);
  });

  it('refuses an empty command line', () => {
    expect(() => relaunchArgv([], '/a', '/b')).toThrow(/no QEMU command line/);
  });
});

describe('mainRamBlockId', () => {
  it('prefers -machine memory-backend=', () => {
    expect(mainRamBlockId(['qemu', '-machine', 'pc,memory-backend=mem0'], 'pc.ram')).toBe('mem0');
  });
  it('falls back to the machine default', () => {
    expect(mainRamBlockId(['qemu', '-m', '1G'], 'pc.ram')).toBe('pc.ram');
  });
});

describe('relaunchArgv deny-list (every spelling QEMU accepts)', () => {
  it('drops --daemonize, -daemonize=..., --incoming VALUE, -incoming=VALUE, --S and --loadvm', () => {
    const argv = ['qemu', '--daemonize', '-m', '64', '-daemonize=on', '--incoming', 'tcp:0:1', '-incoming=exec:sh', '--S', '--loadvm', 'x', '-loadvm=y'];
    expect(relaunchArgv(argv, '/a.sock', '/a.sock')).toEqual(['qemu', '-m', '64', '-qmp', 'unix:/a.sock,server=on,wait=off', '-S', '-incoming', 'defer']);
  });

  it('keeps values that only look like options, and argv[0]', () => {
    expect(optionName('-daemonize')).toBe('-daemonize');
    expect(optionName('--incoming=x')).toBe('-incoming');
    expect(optionName('file=/x')).toBeUndefined();
    expect(relaunchArgv(['-S', '-name', 'vm'], '/a', '/a').slice(0, 3)).toEqual(['-S', '-name', 'vm']);
  });
});

describe('the relaunched QEMU', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-launch-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A "QEMU" that prints its environment and exits: the launch fails and reports the log's tail. */
  const printsEnv = ['/bin/sh', '-c', 'env >&2; exit 3'];

  it('gets a fixed environment plus the restore marker, nothing of the agent', async () => {
    process.env['VMSNAP_AGENT_SECRET'] = 'token';
    try {
      const err = await launchQemu({ argv: printsEnv, qmpSocket: path.join(dir, 'qmp.sock'), env: { VMSNAP_RESTORE_UID: 'u1' }, timeoutMs: 5000 }).catch((e: Error) => e);
      expect(err).toBeInstanceOf(LaunchError);
      const log = fs.readFileSync(path.join(dir, 'qmp.sock.qemu.log'), 'utf8');
      expect(log).toContain('VMSNAP_RESTORE_UID=u1');
      expect(log).not.toContain('VMSNAP_AGENT_SECRET');
      expect(relaunchEnv({ A: 'b' })).toEqual({ PATH: expect.stringContaining('/usr/bin'), A: 'b' });
    } finally {
      delete process.env['VMSNAP_AGENT_SECRET'];
    }
  });

  it('attack: a symlink planted at the log path never creates or appends to its target', async () => {
    const target = path.join(dir, 'host-file');
    const absent = path.join(dir, 'host-new-file');
    fs.writeFileSync(target, 'root:x:0:0\n');
    const sock = path.join(dir, 'vm', 'qmp.sock');
    fs.mkdirSync(path.dirname(sock));
    for (const aim of [target, absent]) {
      fs.rmSync(`${sock}.qemu.log`, { force: true });
      fs.symlinkSync(aim, `${sock}.qemu.log`);
      const err = await launchQemu({ argv: printsEnv, qmpSocket: sock, timeoutMs: 5000 }).catch((e: Error) => e);
      expect((err as Error).message).toMatch(/QEMU exited during launch \(exit 3\): .*PATH=/);
      expect(fs.readFileSync(target, 'utf8')).toBe('root:x:0:0\n');
      expect(fs.existsSync(absent)).toBe(false);
      expect(fs.lstatSync(`${sock}.qemu.log`).isFile()).toBe(true); // the log went to a fresh file in its place
    }
  });

  it('attack: a hard link or a FIFO at the log path is not written to, and does not block', () => {
    const target = path.join(dir, 'host-file');
    fs.writeFileSync(target, 'secret\n');
    const log = path.join(dir, 'qmp.sock.qemu.log');
    fs.linkSync(target, log);
    fs.closeSync(openLaunchLog(log));
    expect(fs.readFileSync(target, 'utf8')).toBe('secret\n');
    expect(fs.statSync(target).nlink).toBe(1);
    fs.rmSync(log);
    execFileSync('mkfifo', [log]);
    const fd = openLaunchLog(log); // would hang forever on a blocking open of a FIFO with no reader
    expect(fs.fstatSync(fd).isFile()).toBe(true);
    fs.closeSync(fd);
  });

  it("reuses the agent's own log of an earlier launch", () => {
    const log = path.join(dir, 'x.log');
    const a = openLaunchLog(log);
    fs.writeSync(a, 'first\n');
    fs.closeSync(a);
    const b = openLaunchLog(log);
    fs.writeSync(b, 'second\n');
    fs.closeSync(b);
    expect(fs.readFileSync(log, 'utf8')).toBe('first\nsecond\n');
  });
});
