// Damaged snapshot files: bit flips in our header, in QEMU's stream structure
// and in RAM pages, and truncation at every depth. Whatever the header, the
// structure checksum or (in verification mode) the RAM digests can tell is
// refused before QEMU is launched; the rest is documented as such.
import fs from 'node:fs';
import path from 'node:path';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { readMappedRamLayout, type RamBlockInfo } from '../../agent/src/snapshot-file/mapped-ram.js';
import { DIGEST_REGION_BYTES, digestsPath } from '../../agent/src/snapshot-file/digests.js';
import { startTinyVm, type QemuVm, pidsWhere, killQemusUnder } from '../../kit/qemu.js';
import { cli, firstPresentPage as firstPresent, flipBits, scratchDir } from './harness.js';
import { sleep } from '../../kit/poll.js';
import { execFileSync } from 'node:child_process';

// fincore (util-linux): the kernel's count of a file's pages in the page cache.
const cachedBytes = (file: string) => Number(execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', file]).toString().trim());

let dir: string;
let vm: QemuVm;
let good: string;
let block: RamBlockInfo;
let firstPresentPage: number;

beforeAll(async () => {
  dir = scratchDir('damaged');
  vm = await startTinyVm(path.join(dir, 'src'), 32);
  await sleep(500); // let the firmware touch some RAM
  good = path.join(dir, 'good.vms');
  const r = await cli(['save', '--qmp', vm.qmpPath, '--out', good, '--digest', '--json']);
  expect(r.stderr).toBe('');
  expect(r.json).toMatchObject({ digests: { path: digestsPath(good), algorithm: 'sha256' } });
  // The digest pass read every page, then dropped them: the file stays out of the page cache.
  expect(cachedBytes(good)).toBe(0);
  ({ block, page: firstPresentPage } = firstPresent(good));
});
afterAll(async () => {
  await vm?.kill();
  killQemusUnder(dir);
  fs.rmSync(dir, { recursive: true, force: true });
});

let n = 0;
/** A copy of the good snapshot (and its digests), damaged by `damage`. */
function damaged(damage: (file: string) => void): string {
  const f = path.join(dir, `bad-${n++}.vms`);
  fs.copyFileSync(good, f);
  fs.copyFileSync(digestsPath(good), digestsPath(f));
  damage(f);
  return f;
}

/** Restores with --launch: on refusal QEMU must never have started (no socket, no process). */
async function refusedBeforeLaunch(file: string, extra: string[] = []): Promise<string> {
  const sock = path.join(dir, `target-${n++}.sock`);
  const r = await cli(['restore', '--in', file, '--qmp', sock, '--launch', ...extra]);
  expect(r.code).toBe(1);
  expect(fs.existsSync(sock)).toBe(false);
  expect(pidsWhere((argv) => argv.some((a) => a.includes(sock)))).toEqual([]);
  return r.stderr;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

describe('our header', () => {
  it.each([
    ['the magic', 0, /is not a vmsnap snapshot \(bad magic\)/],
    ['the format version', 8, /has snapshot format version 3; this vmsnap reads versions 1 and 2/],
    ['the state word', 13, /corrupted header \(state word/],
    ['the stream offset', 18, /corrupted header \((checksum mismatch|metadata length)/],
    ['the metadata length', 24, /corrupted header \((checksum mismatch|metadata length)/],
    ['the header CRC', 29, /corrupted header \(checksum mismatch\)/],
    ['the metadata JSON', 100, /corrupted header \(checksum mismatch\)/],
  ])('a flipped bit in %s: refused before QEMU starts', async (_what, offset, message) => {
    expect(await refusedBeforeLaunch(damaged((f) => flipBits(f, offset as number)))).toMatch(message as RegExp);
  });
});

describe("QEMU's stream structure", () => {
  it('a flipped bit in the QEVM magic', async () => {
    const offset = readHeader(good).streamOffset;
    expect(await refusedBeforeLaunch(damaged((f) => flipBits(f, offset + 1)))).toMatch(/missing QEVM magic/);
  });

  it("a flipped bit in a RAM block's header (its page offset)", async () => {
    // The 28-byte mapped-ram header ends just before the bitmap; its last 8 bytes are the pages offset.
    expect(await refusedBeforeLaunch(damaged((f) => flipBits(f, block.bitmapOffset - 2, 0x10)))).toMatch(
      /inconsistent mapped-ram header|stream headers or device state changed|RAM blocks add up to/,
    );
  });

  it("a flipped bit in a RAM block's bitmap (a page that was saved reads as absent)", async () => {
    const at = block.bitmapOffset + (firstPresentPage >> 3);
    expect(await refusedBeforeLaunch(damaged((f) => flipBits(f, at, 1 << (firstPresentPage & 7))))).toMatch(
      /is corrupted: QEMU's stream headers or device state changed since the save/,
    );
  });

  it('a flipped bit in the device state after the RAM', async () => {
    const pagesEnd = readMappedRamLayout(good, readHeader(good).streamOffset).pagesEnd;
    expect(await refusedBeforeLaunch(damaged((f) => flipBits(f, pagesEnd + 100)))).toMatch(/stream headers or device state changed/);
  });
});

describe('truncation', () => {
  it.each([
    ['inside our header', 20, /is not a vmsnap snapshot|corrupted header/],
    ['inside our metadata', 200, /corrupted header/],
    ['at the stream offset', 1 << 20, /is truncated: 1048576 bytes/],
    ['inside the RAM pages', -1, /is truncated: \d+ bytes, the save wrote \d+/],
    ['one byte short', -2, /is truncated: \d+ bytes, the save wrote \d+/],
  ])('%s: refused before QEMU starts', async (_what, at, message) => {
    const size = fs.statSync(good).size;
    const length = at === -1 ? block.pagesOffset + firstPresentPage * block.pageSize + 100 : at === -2 ? size - 1 : (at as number);
    expect(await refusedBeforeLaunch(damaged((f) => fs.truncateSync(f, length)))).toMatch(message as RegExp);
  });
});

describe('RAM pages and the verification mode', () => {
  const pageOffset = () => block.pagesOffset + firstPresentPage * block.pageSize + 123;

  it('without --verify a flipped bit in a RAM page is not visible to the header checks (what the mode is for)', async () => {
    const f = damaged((file) => flipBits(file, pageOffset()));
    const r = await cli(['inspect', f, '--json']);
    expect(r.json).toMatchObject({ problems: [] });
  });

  it('with --verify it is refused before QEMU starts, naming the block and the offsets', async () => {
    const f = damaged((file) => flipBits(file, pageOffset()));
    const region = Math.floor((firstPresentPage * block.pageSize) / DIGEST_REGION_BYTES);
    const from = region * DIGEST_REGION_BYTES;
    const message = new RegExp(`is corrupted: RAM block ${escape(block.id)}, bytes ${from}\\.\\.\\d+ \\(file offset ${block.pagesOffset + from}\\) differ from the sha256 digest`);
    expect(await refusedBeforeLaunch(f, ['--verify'])).toMatch(message);
    const inspect = await cli(['inspect', f, '--verify', '--json']);
    expect((inspect.json!.problems as string[])[0]).toMatch(message);
  });

  it('--verify refuses a snapshot without digests, and digests of another save', async () => {
    const none = damaged((f) => fs.rmSync(digestsPath(f)));
    expect(await refusedBeforeLaunch(none, ['--verify'])).toMatch(/has no RAM digests .*saved without digests/);
    const other = path.join(dir, 'other.vms');
    expect((await cli(['save', '--qmp', vm.qmpPath, '--out', other, '--digest'])).code).toBe(0);
    const stale = damaged((f) => fs.copyFileSync(digestsPath(other), digestsPath(f)));
    expect(await refusedBeforeLaunch(stale, ['--verify'])).toMatch(/belongs to another save/);
    const garbage = damaged((f) => fs.writeFileSync(digestsPath(f), '{"formatVersion": 1, "blocks": 7}'));
    expect(await refusedBeforeLaunch(garbage, ['--verify'])).toMatch(/\.digests is corrupted \(invalid at/);
  });

  it('an intact snapshot passes --verify and restores', async () => {
    const sock = path.join(dir, 'verified.sock');
    const r = await cli(['restore', '--in', good, '--qmp', sock, '--launch', '--verify', '--json']);
    expect(r.stderr).toBe('');
    expect(r.json).toMatchObject({ running: true, verified: { algorithm: 'sha256' } });
    const present = readMappedRamLayout(good, readHeader(good).streamOffset).blocks.reduce((sum, b) => sum + b.pagesPresent * b.pageSize, 0);
    expect((r.json!.verified as { bytesHashed: number }).bytesHashed).toBe(present);
    expect((await cli(['inspect', good, '--verify', '--json'])).json).toMatchObject({ problems: [], digests: { algorithm: 'sha256' } });
    // The check read every page, then dropped them (a restore's O_DIRECT load of cached pages is slow).
    expect(cachedBytes(good)).toBe(0);
  });
});
