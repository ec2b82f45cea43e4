import { checkPodCommandLine, CommandLineError, QEMU_SANDBOX, qemuArgv, runPaths, swapDisks } from './argv.js';

const paths = runPaths('/run/vmsnap');
const base = ['qemu-system-x86_64', '-m', '256', '-nographic'];

function refusal(argv: string[], cwd = '/'): string {
  try {
    checkPodCommandLine(argv, paths, cwd);
  } catch (err) {
    expect(err).toBeInstanceOf(CommandLineError);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
}

describe('qemuArgv', () => {
  it('appends the QMP socket and the sandbox to the pod command line', () => {
    expect(qemuArgv(base, paths, { incoming: false })).toEqual([
      ...base,
      '-qmp', 'unix:/run/vmsnap/qmp.sock,server=on,wait=off',
      '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    ]);
  });

  const lazy = { ramBackendId: 'pc.ram', sizeBytes: 256 << 20, offset: 1 << 20 };
  const mapped = `memory-backend-file,id=pc.ram,size=${256 << 20},mem-path=/proc/self/fd/3,offset=${1 << 20},share=off,readonly=on,rom=off`;

  it('maps the default RAM from the inherited fd 3 for a lazy restart', () => {
    const argv = qemuArgv(base, paths, { incoming: true, lazy });
    expect(argv.slice(0, -4)).toEqual(qemuArgv(base, paths, { incoming: true }));
    expect(argv.slice(-4)).toEqual(['-object', mapped, '-machine', 'memory-backend=pc.ram']);
  });

  it("replaces the pod's own RAM backend in place, dropping its prealloc", () => {
    const own = [...base, '-object', 'memory-backend-ram,id=pc.ram,size=256M,prealloc=on', '-machine', 'pc,memory-backend=pc.ram'];
    const argv = qemuArgv(own, paths, { incoming: true, lazy });
    expect(argv[own.indexOf('-object') + 1]).toBe(mapped);
    expect(argv.filter((a) => a === '-object')).toHaveLength(1);
  });

  it.each([
    [['-mem-path', '/dev/hugepages'], /hugepages/],
    [['-object', 'memory-backend-memfd,id=pc.ram,size=256M', '-machine', 'memory-backend=pc.ram'], /shared memory/],
    [['-object', 'memory-backend-ram,id=pc.ram,size=256M,share=on', '-machine', 'memory-backend=pc.ram'], /shared/],
    [['-chardev', 'socket,id=c,path=/x', '-device', 'vhost-user-fs-pci,chardev=c'], /vhost-user/],
  ])('refuses a lazy restart of a pod whose RAM cannot be mapped (%j)', (extra, why) => {
    expect(() => qemuArgv([...base, ...extra], paths, { incoming: true, lazy })).toThrow(CommandLineError);
    expect(() => qemuArgv([...base, ...extra], paths, { incoming: true, lazy })).toThrow(why);
  });

  it('maps only for an incoming QEMU', () => {
    expect(() => qemuArgv(base, paths, { incoming: false, lazy })).toThrow(/needs -incoming defer/);
  });

  it('adds -incoming defer for a restore, last', () => {
    const argv = qemuArgv(base, paths, { incoming: true });
    expect(argv.slice(-2)).toEqual(['-incoming', 'defer']);
    expect(argv).toContain(QEMU_SANDBOX);
  });

  it('escapes commas in the run directory the way QEMU reads option values', () => {
    const argv = qemuArgv(base, runPaths('/tmp/a,b'), { incoming: false });
    expect(argv).toContain('unix:/tmp/a,,b/qmp.sock,server=on,wait=off');
  });

  it('does not change the pod command line it was given', () => {
    const pod = [...base];
    qemuArgv(pod, paths, { incoming: true });
    expect(pod).toEqual(base);
  });
});

describe('swapDisks', () => {
  const drive = [...base, '-drive', 'file=/var/lib/vm/disk.raw,format=raw,if=virtio,id=d0'];
  it("starts the disk whose chain reaches the command line's image on the chain's top (qcow2)", () => {
    expect(swapDisks(drive, [{ chain: ['/var/lib/vm/disk.raw.vmsnap-b.qcow2', '/var/lib/vm/disk.raw.vmsnap-a.qcow2', '/var/lib/vm/disk.raw'] }], '/')).toEqual([
      ...base, '-drive', 'file=/var/lib/vm/disk.raw.vmsnap-b.qcow2,format=qcow2,if=virtio,id=d0',
    ]);
    expect(qemuArgv(drive, paths, { incoming: true, disks: [{ chain: ['/var/lib/vm/disk.raw.vmsnap-b.qcow2', '/var/lib/vm/disk.raw'] }] })[5]).toBe('file=/var/lib/vm/disk.raw.vmsnap-b.qcow2,format=qcow2,if=virtio,id=d0');
    // The command line's image is the frozen layer itself (saved before any restore): nothing changes.
    expect(swapDisks(drive, [{ chain: ['/var/lib/vm/disk.raw'] }], '/')).toEqual(drive);
    const blockdev = [...base, '-blockdev', 'driver=file,node-name=f0,filename=/var/lib/vm/disk.raw', '-blockdev', 'driver=raw,node-name=d0,file=f0'];
    expect(swapDisks(blockdev, [{ chain: ['/var/lib/vm/o.qcow2', '/var/lib/vm/disk.raw'] }], '/').slice(-3)).toEqual(['driver=file,node-name=f0,filename=/var/lib/vm/o.qcow2', '-blockdev', 'driver=qcow2,node-name=d0,file=f0']);
  });

  it('refuses a chain that none of its images leads to, and disks outside a restore', () => {
    expect(() => swapDisks(drive, [{ chain: ['/var/lib/vm/other.qcow2'] }], '/')).toThrow(CommandLineError);
    expect(() => swapDisks(drive, [{ chain: ['/var/lib/vm/other.qcow2'] }], '/')).toThrow(/restart-incoming disks\[0\]: none of its images \(\/var\/lib\/vm\/other.qcow2\) appears in the QEMU command line/);
    expect(() => qemuArgv(drive, paths, { incoming: false, disks: [{ chain: ['/var/lib/vm/disk.raw'] }] })).toThrow(/needs -incoming defer/);
  });
});

describe('checkPodCommandLine', () => {
  it('accepts an ordinary command line, its own monitors elsewhere and its own -sandbox', () => {
    expect(() =>
      checkPodCommandLine(
        [...base, '-qmp', 'unix:/tmp/mine.sock,server=on,wait=off', '-chardev', 'socket,id=c,path=/run/vmsnap/console.sock,server=on', '-sandbox', 'on'],
        paths,
        '/',
      ),
    ).not.toThrow();
  });

  it.each([
    [['-incoming', 'defer'], '-incoming'],
    [['--incoming', 'tcp:0:4444'], '--incoming'],
    [['-daemonize'], '-daemonize'],
    [['--daemonize'], '--daemonize'],
  ])('refuses %j, naming the option', (extra, option) => {
    expect(refusal([...base, ...extra])).toMatch(new RegExp(`^refusing the QEMU option ${option}: `));
  });

  it.each([
    [['-qmp', 'unix:/run/vmsnap/qmp.sock,server=on,wait=off'], '-qmp unix:/run/vmsnap/qmp.sock'],
    [['-qmp-pretty', 'unix:/run/vmsnap//qmp.sock'], '-qmp-pretty'],
    [['-chardev', 'socket,id=m,path=/run/vmsnap/./qmp.sock,server=on'], '-chardev socket'],
    [['-chardev', 'socket,id=m,path=/run/vmsnap/launcher.sock,server=on'], 'launcher control socket'],
    [['-monitor', 'unix:/run/vmsnap/sub/../launcher.sock,server,nowait'], '-monitor'],
    [['--serial', 'unix:/run/vmsnap/qmp.sock'], '--serial'],
  ])('refuses %j on the launcher\'s sockets', (extra, named) => {
    expect(refusal([...base, ...extra])).toContain(named);
  });

  it('resolves relative socket paths against the working directory', () => {
    expect(refusal([...base, '-qmp', 'unix:qmp.sock,server=on'], '/run/vmsnap')).toContain('/run/vmsnap/qmp.sock is the QMP socket');
    expect(() => checkPodCommandLine([...base, '-qmp', 'unix:qmp.sock,server=on'], paths, '/home/vm')).not.toThrow();
  });

  it('refuses an empty command line or one that starts with an option', () => {
    expect(refusal([])).toMatch(/must start with the QEMU binary/);
    expect(refusal(['-m', '256'])).toMatch(/not the option -m/);
  });

  it('does not mistake a value mentioning incoming for the option', () => {
    expect(() => checkPodCommandLine([...base, '-name', 'incoming', '-append', 'x=-incoming'], paths, '/')).not.toThrow();
  });
});
