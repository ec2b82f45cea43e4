import { relaunchArgv } from './launch.js';
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
