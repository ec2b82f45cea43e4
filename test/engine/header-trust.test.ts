// The header of a snapshot file the agent saved is bound to its VMSnapshot and
// MACed with the node's key: the tenant's QEMU held a writable fd to the file
// during the save (and may keep a dup), so whatever it writes into the header
// or the stream structure afterwards, or a header copied from another
// VMSnapshot's file, is refused by the agent's check before QEMU is launched.
import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { saveVm } from '../../agent/src/engine/save.js';
import { restoreVm } from '../../agent/src/engine/restore.js';
import { nodeHeaderKey } from '../../agent/src/engine/header-key.js';
import { encodeHeader, FIXED_BYTES } from '../../agent/src/snapshot-file/header.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { verifySnapshotFile } from '../../agent/src/snapshot-file/verify.js';
import { startTinyVm, type QemuVm, killQemusUnder } from '../../kit/qemu.js';
import { scratchDir } from './harness.js';
import { sleep } from '../../kit/poll.js';

let dir: string;
let storage: string;
let vm: QemuVm;
let fileA: string;
let fileB: string;
const idA = { namespace: 'ns-a', name: 'snap', uid: 'uid-a' };
const idB = { namespace: 'ns-b', name: 'snap', uid: 'uid-b' };
const trustA = () => ({ key: nodeHeaderKey(storage), snapshot: idA });

beforeAll(async () => {
  dir = scratchDir('header-trust');
  storage = path.join(dir, 'storage');
  fs.mkdirSync(path.join(storage, 'ns-a'), { recursive: true, mode: 0o700 });
  fs.mkdirSync(path.join(storage, 'ns-b'), { recursive: true, mode: 0o700 });
  vm = await startTinyVm(path.join(dir, 'vms', 'ns-a', 'vm'), 32);
  await sleep(300); // QEMU saves a VM that never ran only once: let it run
  const save = (outPath: string, snapshot: typeof idA) =>
    saveVm({ qmpSocket: vm.qmpPath, outPath, channels: 1, directIO: 'auto', after: 'resume', live: false, trust: { key: nodeHeaderKey(storage), snapshot } });
  fileA = path.join(storage, 'ns-a', 'snap-uid-a.vms');
  fileB = path.join(storage, 'ns-b', 'snap-uid-b.vms');
  await save(fileA, idA);
  await save(fileB, idB);
}, 120_000);
afterAll(async () => {
  await vm?.kill();
  killQemusUnder(dir);
  fs.rmSync(dir, { recursive: true, force: true });
});

let n = 0;
function copyOfA(): string {
  const f = path.join(storage, 'ns-a', `copy-${n++}.vms`);
  fs.copyFileSync(fileA, f);
  return f;
}

/** What a QEMU still holding a writable fd can do: any header it likes, with a correct CRC. */
function rewriteHeader(file: string, header: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, Buffer.alloc(FIXED_BYTES + 64 * 1024), 0, FIXED_BYTES + 64 * 1024, 0);
    fs.writeSync(fd, header, 0, header.length, 0);
  } finally {
    fs.closeSync(fd);
  }
}

it('the agent reads back its own file: identity, header MAC and stream-structure MAC', () => {
  const v = verifySnapshotFile(fileA, trustA());
  expect(v.header.authenticated).toBe(true);
  expect(v.header.metadata).toMatchObject({ formatVersion: 2, snapshot: idA, stream: { structureMac: expect.stringMatching(/^[0-9a-f]{64}$/) } });
  expect(fs.statSync(path.join(storage, '.vmsnap', 'header.key')).mode & 0o777).toBe(0o600);
});

it('attack: a flipped byte in the header after the save is refused by the agent', () => {
  const f = copyOfA();
  const fd = fs.openSync(f, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, 40);
  b[0]! ^= 0x01;
  fs.writeSync(fd, b, 0, 1, 40); // inside the MAC field: the CRC does not cover it
  fs.closeSync(fd);
  expect(() => verifySnapshotFile(f, trustA())).toThrow(/has a header this node's agent did not write \(its MAC does not match/);
});

it("attack: the tenant's QEMU rewrites the header after DONE (new argv, CRC fixed up): refused", () => {
  const f = copyOfA();
  const meta = readHeader(f).metadata;
  meta.qemu.argv = [path.join(dir, 'vms', 'ns-a', 'vm', 'evil.sh')];
  // Unsigned (the tenant has no key), or the old MAC kept over new metadata: both refused.
  rewriteHeader(f, encodeHeader('complete', meta));
  expect(() => verifySnapshotFile(f, trustA())).toThrow(/unauthenticated header/);
  const signedOld = fs.readFileSync(fileA).subarray(32, 64);
  const forged = encodeHeader('complete', meta);
  signedOld.copy(forged, 32);
  rewriteHeader(f, forged);
  expect(() => verifySnapshotFile(f, trustA())).toThrow(/MAC does not match/);
  expect(readHeader(f).metadata.qemu.argv[0]).toMatch(/evil\.sh$/); // the CLI, without a key, reads it: the check is the agent's
});

it("attack: a header copied from another VMSnapshot's file (another namespace) is refused, naming both", async () => {
  const f = copyOfA();
  const raw = fs.readFileSync(fileB).subarray(0, FIXED_BYTES + fs.readFileSync(fileB).readUInt32LE(24));
  rewriteHeader(f, Buffer.from(raw));
  const message = `${f} belongs to VMSnapshot ns-b/snap (uid uid-b), not to VMSnapshot ns-a/snap (uid uid-a) that it is restored from`;
  expect(() => verifySnapshotFile(f, trustA())).toThrow(message);
  // The whole restore, lazy launch included, refuses before any QEMU starts.
  const sock = path.join(dir, 'vms', 'ns-a', 'target', 'qmp.sock');
  await expect(restoreVm({ inPath: f, qmpSocket: sock, directIO: 'auto', launch: true, lazy: {}, trust: trustA() })).rejects.toThrow(message);
  expect(fs.existsSync(sock)).toBe(false);
});

it('attack: device state rewritten after the save, its CRC32 forged, is caught by the structure MAC', () => {
  const f = copyOfA();
  const meta = readHeader(f).metadata;
  const end = meta.stream.endOffset!;
  // Change the last 8 bytes of the stream (device state), then pick 4 bytes before them
  // so that the CRC32 of the structure comes out as recorded (CRC32 is linear: forgeable).
  const fd = fs.openSync(f, 'r+');
  const tail = Buffer.alloc(64);
  fs.readSync(fd, tail, 0, 64, end - 64);
  const want = crc32(tail);
  tail[63]! ^= 0xff;
  forgeCrc(tail, 52, want);
  expect(crc32(tail)).toBe(want);
  fs.writeSync(fd, tail, 0, 64, end - 64);
  fs.closeSync(fd);
  expect(() => verifySnapshotFile(f)).not.toThrow(); // the CRC alone is fooled
  expect(() => verifySnapshotFile(f, trustA())).toThrow(/was changed after the save: .* no longer match the MAC/);
});

/** Sets buf[at..at+4] so that crc32(buf) === want (brute force over the linear CRC's 32 unknown bits). */
function forgeCrc(buf: Buffer, at: number, want: number): void {
  // crc(buf with patch p) = crc(buf with 0) ^ L(p) for a linear map L: solve bit by bit.
  buf.writeUInt32LE(0, at);
  const base = crc32(buf);
  const cols: number[] = [];
  for (let i = 0; i < 32; i++) {
    buf.writeUInt32LE((1 << i) >>> 0, at);
    cols.push((crc32(buf) ^ base) >>> 0);
  }
  // Gaussian elimination over GF(2): find p with XOR of cols[i] for set bits = want ^ base.
  const rows = cols.map((c, i) => ({ v: c, p: (1 << i) >>> 0 }));
  let target = (want ^ base) >>> 0;
  let patch = 0;
  for (let bit = 31; bit >= 0; bit--) {
    const idx = rows.findIndex((r) => (r.v >>> bit) & 1);
    if (idx < 0) continue;
    const [pivot] = rows.splice(idx, 1);
    for (const r of rows) if ((r.v >>> bit) & 1) {
      r.v = (r.v ^ pivot!.v) >>> 0;
      r.p = (r.p ^ pivot!.p) >>> 0;
    }
    if ((target >>> bit) & 1) {
      target = (target ^ pivot!.v) >>> 0;
      patch = (patch ^ pivot!.p) >>> 0;
    }
  }
  buf.writeUInt32LE(patch, at);
}
