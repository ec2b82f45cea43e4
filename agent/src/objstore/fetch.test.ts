import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dropFromPageCache, fetchedEntriesToRemove, headerOfFirstPart } from './fetch.js';
import { encodeHeader, STREAM_OFFSET } from '../snapshot-file/header.js';
import type { SnapshotMetadata } from '../snapshot-file/metadata.js';

describe('the cache rule for fetched copies', () => {
  const dir = '/snaps/a/fetched';
  const entries = ['live-1.vms', 'live-1.vms.digests', 'gone-2.vms', 'gone-2.vms.digests', 'gone-3.vms.partial', 'reading-4.vms'];
  it('removes the copies (and their digests, partial downloads) of snapshots that are gone, unless a restore reads them', () => {
    const live = new Set(['live-1.vms']);
    const inUse = new Map([[`${dir}/reading-4.vms`, 1]]);
    expect(fetchedEntriesToRemove(dir, entries, live, inUse)).toEqual(['gone-2.vms', 'gone-2.vms.digests', 'gone-3.vms.partial']);
  });
  it('keeps every copy whose snapshot exists', () => {
    expect(fetchedEntriesToRemove(dir, ['a.vms', 'a.vms.digests'], new Set(['a.vms']), new Map())).toEqual([]);
  });
});

describe('dropFromPageCache', () => {
  // fincore (util-linux) reads the kernel's own count of the file's resident pages.
  const resident = (file: string) => Number(execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', file]).toString().trim());
  it("drops a synced file's pages from the page cache, so QEMU's O_DIRECT reads go to the disk", () => {
    const dir = fs.mkdtempSync(path.join(process.env.VMSNAP_TEST_DIR ?? os.tmpdir(), 'vmsnap-drop-'));
    try {
      const file = path.join(dir, 'copy.vms');
      const fd = fs.openSync(file, 'w');
      fs.writeSync(fd, crypto.randomBytes(8 << 20));
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.readFileSync(file);
      expect(resident(file)).toBeGreaterThan(4 << 20);
      dropFromPageCache(file);
      expect(resident(file)).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('headerOfFirstPart (the header of a snapshot still downloading)', () => {
  const snap = { metadata: { namespace: 'ns', name: 'snap', uid: 'u-1' } };
  const metadata: SnapshotMetadata = {
    formatVersion: 2,
    createdAt: '2026-12-07T00:00:00.000Z',
    snapshot: { namespace: 'ns', name: 'snap', uid: 'u-1' },
    vm: { namespace: 'ns', name: 'vm', qmpSocket: '/run/vms/ns/vm/qmp.sock' },
    qemu: { version: '10.0.2', machine: 'pc', pid: 1, argv: ['qemu-system-x86_64', '-m', '256'] },
    ram: { bytes: 256 << 20, mainBlockId: 'pc.ram' },
    capture: { mode: 'Paused', wasRunning: true, after: 'stop' },
    stream: { offset: STREAM_OFFSET, channels: 4, directIO: true, endOffset: 300 << 20, structureCrc32: 1 },
  };
  // A part's plaintext: the header, then the first stream bytes.
  const plainOf = (header: Buffer) => Buffer.concat([header, Buffer.alloc(64 << 10, 0xaa)]);
  const first = (length: number) => ({ segments: [{ offset: 0, length }, { offset: 8 << 20, length: 4096 }] });

  it('reads the header of the part that starts the file', () => {
    const plain = plainOf(encodeHeader('complete', metadata));
    expect(headerOfFirstPart(first(64 << 10), plain, snap)?.metadata.qemu.argv).toEqual(metadata.qemu.argv);
  });
  it("gives nothing for another part, a header cut by the part's first segment, an incomplete snapshot or another VMSnapshot's header", () => {
    const header = encodeHeader('complete', metadata);
    expect(headerOfFirstPart({ segments: [{ offset: 4096, length: 64 << 10 }] }, plainOf(header), snap)).toBeUndefined();
    expect(headerOfFirstPart(first(header.length - 1), plainOf(header), snap)).toBeUndefined();
    expect(headerOfFirstPart(first(64 << 10), plainOf(encodeHeader('incomplete', metadata)), snap)).toBeUndefined();
    const other = encodeHeader('complete', { ...metadata, snapshot: { namespace: 'ns', name: 'snap', uid: 'u-2' } });
    expect(headerOfFirstPart(first(64 << 10), plainOf(other), snap)).toBeUndefined();
  });
});
