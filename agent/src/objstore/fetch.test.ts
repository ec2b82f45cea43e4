import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dropFromPageCache, fetchedEntriesToRemove } from './fetch.js';

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
