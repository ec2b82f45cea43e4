import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { directWriter, writeChunks } from './direct-write.js';

describe('writeChunks', () => {
  it('writes aligned segments directly in chunks of the buffer size and the unaligned ones through the page cache', () => {
    const segments = [
      { offset: 0, length: 12288 },
      { offset: 1 << 20, length: 4096 },
      { offset: 8 << 20, length: 100 }, // a file's last bytes
    ];
    expect(writeChunks(segments, 8192)).toEqual([
      { plainOffset: 0, fileOffset: 0, length: 8192, direct: true },
      { plainOffset: 8192, fileOffset: 8192, length: 4096, direct: true },
      { plainOffset: 12288, fileOffset: 1 << 20, length: 4096, direct: true },
      { plainOffset: 16384, fileOffset: 8 << 20, length: 100, direct: false },
    ]);
    expect(writeChunks([{ offset: 512, length: 4096 }], 8192)).toEqual([{ plainOffset: 0, fileOffset: 512, length: 4096, direct: false }]);
  });
  it('refuses a chunk size that is not a multiple of the alignment', () => {
    expect(() => writeChunks([], 1000)).toThrow(/multiple of 4096/);
  });
});

describe('directWriter', () => {
  // fincore (util-linux) reads the kernel's own count of the file's resident pages.
  const resident = (file: string) => Number(execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', file]).toString().trim());
  it('writes the bytes at their offsets, the aligned ones past the page cache (where the filesystem has O_DIRECT)', async () => {
    const dir = fs.mkdtempSync(path.join(process.env.VMSNAP_TEST_DIR ?? '/var/tmp', 'vmsnap-direct-'));
    try {
      const file = path.join(dir, 'copy.vms.partial');
      const fh = await open(file, 'w', 0o600);
      await fh.truncate(32 << 20);
      const writer = await directWriter(file, fh, 1 << 20);
      // A filesystem without O_DIRECT (tmpfs): the download writes through the page cache instead.
      if (!writer) return void (await fh.close());
      const segments = [
        { offset: 0, length: 3 << 20 },
        { offset: 16 << 20, length: 5 << 20 },
        { offset: (32 << 20) - 10, length: 10 },
      ];
      const plain = crypto.randomBytes((8 << 20) + 10);
      await writer.write(plain, segments);
      await fh.sync();
      await writer.close();
      await fh.close();
      // Only the unaligned tail went through the page cache.
      expect(resident(file)).toBeLessThanOrEqual(8192);
      const back = fs.readFileSync(file);
      expect(back.subarray(0, 3 << 20).equals(plain.subarray(0, 3 << 20))).toBe(true);
      expect(back.subarray(16 << 20, 21 << 20).equals(plain.subarray(3 << 20, 8 << 20))).toBe(true);
      expect(back.subarray((32 << 20) - 10).equals(plain.subarray(8 << 20))).toBe(true);
      expect(back.subarray(3 << 20, 16 << 20).every((b) => b === 0)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
