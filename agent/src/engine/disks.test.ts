import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  argvImagePath,
  checkHeldBy,
  copyMac,
  createRestoreOverlays,
  fileId,
  overlayPath,
  rewriteDiskArgs,
  rewriteMacs,
  writableDisks,
  type BlockInfo,
  type DiskRecord,
} from './disks.js';
import { relaunchArgv } from './launch.js';
import { OverlayLedger } from './overlay-ledger.js';

type Image = NonNullable<BlockInfo['inserted']>['image'];
const img = (filename: string, format: string, backing?: Image): Image => ({ filename, format, 'virtual-size': 1 << 26, ...(backing ? { 'backing-image': backing } : {}) });

describe('writableDisks', () => {
  it('keeps writable drives with their chain and skips read-only, CD-ROM and empty ones', () => {
    const blocks: BlockInfo[] = [
      { device: 'virtio0', inserted: { ro: false, drv: 'qcow2', 'node-name': '#block1', image: img('/v/d.raw.vmsnap-a.qcow2', 'qcow2', img('/v/d.raw', 'raw')) } },
      { device: 'ide1-cd0', inserted: { ro: true, drv: 'raw', image: img('/iso/x.iso', 'raw') } },
      { device: 'floppy0' },
      { device: '', qdev: '/machine/peripheral/d1/virtio-backend', inserted: { ro: false, drv: 'qcow2', 'node-name': 'fmt1', image: img('/v/e.qcow2', 'qcow2') } },
    ];
    const disks = writableDisks(blocks);
    expect(disks.map((d) => d.device || d.nodeName)).toEqual(['virtio0', 'fmt1']);
    expect(disks[0]!.chain).toEqual([
      { filename: '/v/d.raw.vmsnap-a.qcow2', format: 'qcow2' },
      { filename: '/v/d.raw', format: 'raw' },
    ]);
  });
});

describe('argvImagePath', () => {
  const disk = writableDisks([
    { device: 'virtio0', inserted: { ro: false, drv: 'qcow2', image: img('/v/d.raw.vmsnap-a.qcow2', 'qcow2', img('/v/d.raw', 'raw')) } },
  ])[0]!;
  it('finds the image of the chain that the command line names, as a whole path', () => {
    expect(argvImagePath(['qemu', '-drive', 'file=/v/d.raw,format=raw,if=virtio'], disk)).toBe('/v/d.raw');
    expect(argvImagePath(['qemu', '-blockdev', '{"driver":"file","filename":"/v/d.raw","node-name":"f"}'], disk)).toBe('/v/d.raw');
  });
  it('refuses a disk whose images the command line does not name (a prefix is not a match)', () => {
    expect(() => argvImagePath(['qemu', '-drive', 'file=/v/d.raw2,if=virtio'], disk)).toThrow(/virtio0: none of its images/);
  });
});

describe('rewriteDiskArgs', () => {
  const to = '/w/d.raw.vmsnap-r.qcow2';
  it('-drive: file and format, other options kept (doubled commas too)', () => {
    expect(rewriteDiskArgs(['qemu', '-drive', 'file=/v/d.raw,format=raw,if=virtio,serial=a,,b'], [{ from: '/v/d.raw', to }])).toEqual([
      'qemu',
      '-drive',
      `file=${to},format=qcow2,if=virtio,serial=a,,b`,
    ]);
  });
  it('keyval -blockdev: a file node and the format node on top of it', () => {
    const out = rewriteDiskArgs(
      ['qemu', '-blockdev', 'driver=file,filename=/v/d.raw,node-name=f0', '-blockdev', 'driver=raw,file=f0,node-name=d0', '-device', 'virtio-blk,drive=d0'],
      [{ from: '/v/d.raw', to }],
    );
    expect(out.slice(1)).toEqual(['-blockdev', `driver=file,filename=${to},node-name=f0`, '-blockdev', 'driver=qcow2,file=f0,node-name=d0', '-device', 'virtio-blk,drive=d0']);
  });
  it('JSON -blockdev, nested file', () => {
    const out = rewriteDiskArgs(['qemu', '-blockdev', JSON.stringify({ driver: 'raw', 'node-name': 'd0', file: { driver: 'file', filename: '/v/d.raw' } })], [{ from: '/v/d.raw', to }]);
    expect(JSON.parse(out[2]!)).toEqual({ driver: 'qcow2', 'node-name': 'd0', file: { driver: 'file', filename: to } });
  });
  it('leaves other disks alone', () => {
    const argv = ['qemu', '-drive', 'file=/v/other.raw,format=raw'];
    expect(rewriteDiskArgs(argv, [{ from: '/v/d.raw', to }])).toEqual(argv);
  });
});

describe('relaunchArgv for a copy', () => {
  it('puts the disk on its overlay before moving directories, and gives NICs new MACs', () => {
    const argv = relaunchArgv(
      ['qemu', '-name', 'a', '-drive', 'file=/vms/ns/a/d.raw,format=raw', '-device', 'virtio-net,netdev=n0,mac=52:54:00:12:34:56', '-qmp', 'unix:/vms/ns/a/qmp.sock,server=on'],
      '/vms/ns/a/qmp.sock',
      '/vms/ns/b/qmp.sock',
      [],
      { paths: [['/vms/ns/a', '/vms/ns/b']], name: 'b', disks: [{ from: '/vms/ns/a/d.raw', to: '/vms/ns/b/d.raw.vmsnap-r.qcow2' }] },
    );
    expect(argv).toContain('file=/vms/ns/b/d.raw.vmsnap-r.qcow2,format=qcow2');
    expect(argv).toContain(`virtio-net,netdev=n0,mac=${copyMac('b', 0)}`);
    expect(argv.join(' ')).not.toContain('/vms/ns/a');
  });
});

describe('MACs and overlay names', () => {
  it('copyMac is deterministic, locally administered and unicast, and differs per VM and NIC', () => {
    const mac = copyMac('web-1', 0);
    expect(mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    const first = parseInt(mac.slice(0, 2), 16);
    expect(first & 0x02).toBe(0x02);
    expect(first & 0x01).toBe(0);
    expect(copyMac('web-1', 0)).toBe(mac);
    expect(new Set([mac, copyMac('web-2', 0), copyMac('web-1', 1)]).size).toBe(3);
  });
  it('rewriteMacs touches only NIC options that carry a mac', () => {
    const out = rewriteMacs(['qemu', '-device', 'e1000,mac=52:54:00:00:00:01', '-device', 'virtio-blk,drive=d0', '-nic', 'user,mac=52:54:00:00:00:02'], 'b');
    expect(out).toEqual(['qemu', '-device', `e1000,mac=${copyMac('b', 0)}`, '-device', 'virtio-blk,drive=d0', '-nic', `user,mac=${copyMac('b', 1)}`]);
  });
  it('overlay names do not grow with every snapshot', () => {
    expect(overlayPath('/v', '/v/d.raw.vmsnap-abc123.qcow2')).toMatch(/^\/v\/d\.raw\.vmsnap-[0-9a-z]+\.qcow2$/);
  });
});

describe('disk paths a QEMU reports or a header records (hostile input)', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-disks-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const disk = (filename: string) => writableDisks([{ device: 'virtio0', inserted: { ro: false, drv: 'raw', image: img(filename, 'raw') } }]);

  it('attack: a disk image the QEMU process does not hold open (a host file it names) is not frozen', () => {
    const hostFile = path.join(dir, 'shadow');
    fs.writeFileSync(hostFile, 'x');
    // This process stands in for QEMU: it holds `held` open, not the host file.
    const held = path.join(dir, 'disk.raw');
    fs.writeFileSync(held, 'x');
    const fd = fs.openSync(held, 'r');
    try {
      expect(() => checkHeldBy(process.pid, disk(hostFile))).toThrow(
        `disk virtio0: QEMU (pid ${process.pid}) reports the image ${hostFile} but does not have it open: the process behind the QMP socket does not run that disk, so it is not frozen or recorded`,
      );
      expect(() => checkHeldBy(process.pid, disk(held))).not.toThrow();
    } finally {
      fs.closeSync(fd);
    }
  });

  const record = (base: string): DiskRecord => ({ device: 'virtio0', argvPath: path.join(dir, 'vm', 'disk.raw'), base, baseFormat: 'raw', baseFile: fileId(base), virtualSize: 1 << 20 });

  it('attack: a restore refuses a base that is no longer the file the save froze', async () => {
    const base = path.join(dir, 'disk.raw');
    fs.writeFileSync(base, Buffer.alloc(1 << 20));
    const rec = record(base);
    fs.rmSync(base);
    fs.symlinkSync('/etc/hostname', base); // the tenant points the recorded name at a host file
    await expect(createRestoreOverlays([rec], (d) => d, '/', OverlayLedger.inMemory())).rejects.toThrow(
      `disk virtio0: ${base} is no longer the base the snapshot froze (another file was put in its place); the snapshot cannot be restored onto it`,
    );
    expect(fs.readdirSync(dir)).toEqual(['disk.raw']); // no overlay left behind
  });

  it('creates the overlay itself (O_EXCL), has qemu-img write it through that fd, and records it in the ledger', async () => {
    const base = path.join(dir, 'disk.raw');
    fs.writeFileSync(base, Buffer.alloc(1 << 20));
    fs.mkdirSync(path.join(dir, 'vm'));
    const ledger = OverlayLedger.inMemory();
    const [made] = await createRestoreOverlays([record(base)], (d) => d, '/', ledger);
    expect(made!.to).toMatch(new RegExp(`^${dir}/vm/disk\\.raw\\.vmsnap-[0-9a-z]+\\.qcow2$`));
    expect(fs.readFileSync(made!.to).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
    expect(ledger.owns(made!.to)).toBe(true);
  });
});
