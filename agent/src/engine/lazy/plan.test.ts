import { eagerArgv, lazyBackingOf, planLazyArgv, type LazyBacking } from './plan.js';
import { parseQemuOptions, formatQemuOptions } from './qemu-options.js';

const backing: LazyBacking = { file: '/snap/a,b.vms', blockId: 'pc.ram', size: 268435456, offset: 3145728 };
const LAZY_OBJECT = 'memory-backend-file,id=pc.ram,size=268435456,mem-path=/snap/a,,b.vms,offset=3145728,share=off,readonly=on,rom=off';
const tail = ['-S', '-incoming', 'defer'];

describe('planLazyArgv', () => {
  it('adds a private read-only file mapping of the page region when the VM has only -m', () => {
    const plan = planLazyArgv(['qemu', '-machine', 'pc', '-m', '256', ...tail], backing);
    expect(plan).toEqual({ lazy: true, argv: ['qemu', '-machine', 'pc', '-m', '256', ...tail, '-object', LAZY_OBJECT, '-machine', 'memory-backend=pc.ram'] });
  });

  it('replaces a memory-backend-ram in place, keeping its other properties and dropping prealloc', () => {
    const plan = planLazyArgv(
      ['qemu', '-object', 'memory-backend-ram,id=mem0,size=256M,merge=off,prealloc=on', '-machine', 'pc,memory-backend=mem0', ...tail],
      { ...backing, blockId: 'mem0' },
    );
    expect(plan.lazy).toBe(true);
    const argv = (plan as { argv: string[] }).argv;
    expect(argv[2]).toBe('memory-backend-file,id=mem0,size=268435456,merge=off,mem-path=/snap/a,,b.vms,offset=3145728,share=off,readonly=on,rom=off');
    expect(argv).toHaveLength(8); // nothing appended
  });

  it('rewrites the JSON form of -object', () => {
    const plan = planLazyArgv(['qemu', '-object', '{"qom-type":"memory-backend-ram","id":"pc.ram","size":268435456}', '-M', 'memory-backend=pc.ram'], backing);
    const obj = JSON.parse((plan as { argv: string[] }).argv[2]!);
    expect(obj).toEqual({ 'qom-type': 'memory-backend-file', id: 'pc.ram', size: 268435456, 'mem-path': '/snap/a,b.vms', offset: 3145728, share: false, readonly: true, rom: false });
  });

  it.each([
    [['-object', 'memory-backend-memfd,id=pc.ram,size=256M'], /shared memory \(memory-backend-memfd\)/],
    [['-object', 'memory-backend-file,id=pc.ram,size=256M,mem-path=/dev/hugepages,share=on'], /keeps its RAM in a file/],
    [['-object', 'memory-backend-ram,id=pc.ram,size=256M,share=on'], /shared \(memory-backend-ram share=on\)/],
    [['-mem-path', '/dev/hugepages'], /-mem-path, usually hugepages/],
    [['-chardev', 'socket,id=c,path=/s', '-device', 'vhost-user-fs-pci,chardev=c'], /vhost-user/],
    [['-device', 'vfio-pci,host=0000:01:00.0'], /VFIO/],
    [['-numa', 'node,memdev=m0', '-object', 'memory-backend-ram,id=m0,size=128M'], /NUMA memdevs/],
    [['-machine', 'pc,memory-backend=other'], /memory-backend=other has no -object/],
  ])('falls back for %j', (extra, reason) => {
    const plan = planLazyArgv(['qemu', '-m', '256', ...extra, ...tail], backing);
    expect(plan.lazy).toBe(false);
    expect((plan as { reason: string }).reason).toMatch(reason);
  });

  it('leaves other memory backends alone', () => {
    const argv = ['qemu', '-object', 'memory-backend-file,id=dimm0,size=1G,mem-path=/x,share=on', '-m', '256', ...tail];
    const plan = planLazyArgv(argv, backing);
    expect((plan as { argv: string[] }).argv.slice(0, argv.length)).toEqual(argv);
  });
});

describe('eagerArgv', () => {
  it('turns the mapping of a snapshot back into anonymous RAM of the same id and size', () => {
    const lazy = (planLazyArgv(['qemu', '-m', '256'], backing) as { argv: string[] }).argv;
    expect(eagerArgv(lazy, (p) => p === '/snap/a,b.vms')).toEqual([
      'qemu', '-m', '256', '-object', 'memory-backend-ram,id=pc.ram,size=268435456', '-machine', 'memory-backend=pc.ram',
    ]);
  });

  it('keeps a file backend that is not a snapshot mapping', () => {
    const argv = ['qemu', '-object', 'memory-backend-file,id=pc.ram,size=1G,mem-path=/dev/shm/ram,share=on'];
    expect(eagerArgv(argv, () => true)).toEqual(argv);
    const lazyOther = ['qemu', '-object', LAZY_OBJECT];
    expect(eagerArgv(lazyOther, () => false)).toEqual(lazyOther);
  });
});

describe('QEMU option syntax', () => {
  it('round-trips escaped commas and implied keys', () => {
    const o = parseQemuOptions('memory-backend-file,id=x,mem-path=/a,,b,share', 'qom-type');
    expect(o.props).toEqual([['qom-type', 'memory-backend-file'], ['id', 'x'], ['mem-path', '/a,b'], ['share', 'on']]);
    expect(formatQemuOptions(o, 'qom-type')).toBe('memory-backend-file,id=x,mem-path=/a,,b,share=on');
  });
});

describe('lazyBackingOf', () => {
  it('finds the snapshot mapping of a lazily restored command line, and nothing in an eager one', () => {
    const lazy = (planLazyArgv(['qemu', '-m', '256'], backing) as { argv: string[] }).argv;
    expect(lazyBackingOf(lazy)).toEqual({ file: '/snap/a,b.vms', size: 268435456 });
    expect(lazyBackingOf(['qemu', '-object', 'memory-backend-file,id=pc.ram,size=1G,mem-path=/dev/shm/x,share=on'])).toBeUndefined();
    expect(lazyBackingOf(['qemu', '-m', '256'])).toBeUndefined();
  });
});
