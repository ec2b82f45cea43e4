import { diskSwaps, podDiskFreezer, podDiskRecord, podDiskRefusal, podImageProblem } from './pod-disks.js';
import type { WritableDisk } from '../engine/disks.js';

const VOLUMES = ['/var/lib/vm', '/run/vmsnap'];
const disk = (chain: string[]): WritableDisk => ({ device: 'virtio0', chain: chain.map((filename) => ({ filename, format: 'qcow2' })), virtualSize: 1 << 26 });
const argv = ['qemu-system-x86_64', '-drive', 'file=/var/lib/vm/disk.raw,format=raw,if=virtio'];

describe('podImageProblem', () => {
  it('takes plain absolute paths beneath a writable volume of the pod', () => {
    expect(podImageProblem('/var/lib/vm/disk.raw', VOLUMES)).toBeUndefined();
    expect(podImageProblem('/var/lib/vm/a/b.qcow2', ['/var/lib/vm/'])).toBeUndefined();
  });

  it('refuses relative paths, dot segments, and anything outside the volumes, naming the rule', () => {
    expect(podImageProblem('disk.raw', VOLUMES)).toMatch(/is not an absolute path without \. or \.\. segments/);
    expect(podImageProblem('/var/lib/vm/../../etc/shadow', VOLUMES)).toMatch(/without \. or \.\. segments/);
    expect(podImageProblem('/var/lib/vm//disk.raw', VOLUMES)).toMatch(/empty segments/);
    expect(podImageProblem('/etc/shadow', VOLUMES)).toBe('/etc/shadow does not lie beneath a writable volume of the pod (/var/lib/vm, /run/vmsnap): keep writable disk images on a volume mounted read-write');
    expect(podImageProblem('/var/lib/vmx/disk.raw', VOLUMES)).toMatch(/does not lie beneath/);
    expect(podImageProblem('/var/lib/vm', VOLUMES)).toMatch(/does not lie beneath/);
    expect(podImageProblem('/var/lib/vm/disk.raw', [])).toMatch(/\(none\)/);
  });
});

describe('pod disk records', () => {
  it('record the chain as the pod names it, and never a file identity (the agent looks at nothing)', () => {
    const r = podDiskRecord(disk(['/var/lib/vm/disk.raw.vmsnap-1.qcow2', '/var/lib/vm/disk.raw']), argv);
    expect(r).toEqual({ device: 'virtio0', argvPath: '/var/lib/vm/disk.raw', base: '/var/lib/vm/disk.raw.vmsnap-1.qcow2', baseFormat: 'qcow2', virtualSize: 1 << 26, chain: ['/var/lib/vm/disk.raw.vmsnap-1.qcow2', '/var/lib/vm/disk.raw'] });
    expect(diskSwaps([r])).toEqual([{ chain: r.chain }]);
  });

  it('the freezer refuses images outside the volumes or missing from the command line', () => {
    const f = podDiskFreezer(VOLUMES);
    expect(() => f.check([disk(['/var/lib/vm/disk.raw'])], { pid: 1, argv })).not.toThrow();
    expect(() => f.check([disk(['/var/lib/vm/o.qcow2', '/host/disk.raw'])], { pid: 1, argv })).toThrow(/disk virtio0: its image \/host\/disk.raw does not lie beneath/);
    expect(() => f.check([disk(['/var/lib/vm/other.raw'])], { pid: 1, argv })).toThrow(/appears in the QEMU command line/);
  });

  it('a restore refuses host-made records and chains that leave the volumes (checked again: the pod may have changed)', () => {
    const ok = podDiskRecord(disk(['/var/lib/vm/disk.raw']), argv);
    expect(podDiskRefusal([ok], VOLUMES)).toBeUndefined();
    expect(podDiskRefusal([{ ...ok, chain: undefined }], VOLUMES)).toMatch(/frozen by a save on the host/);
    expect(podDiskRefusal([{ ...ok, chain: ['/var/lib/vm/other.raw'] }], VOLUMES)).toMatch(/frozen by a save on the host/);
    expect(podDiskRefusal([ok], ['/data'])).toMatch(/disk virtio0: the snapshot's image \/var\/lib\/vm\/disk.raw does not lie beneath a writable volume of the pod \(\/data\)/);
  });
});
