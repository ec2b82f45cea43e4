import { crc32 } from 'node:zlib';
import { encodeHeader, FIXED_BYTES, MAC_OFFSET, SnapshotFileError, STREAM_OFFSET } from './header.js';
import { decodeHeader } from './read.js';
import type { SnapshotMetadata } from './metadata.js';

const metadata: SnapshotMetadata = {
  formatVersion: 2,
  createdAt: '2026-11-21T00:00:00.000Z',
  snapshot: { namespace: 'default', name: 'snap-1', uid: 'uid-1' },
  vm: { namespace: 'default', name: 'demo', qmpSocket: '/run/vms/default/demo/qmp.sock' },
  qemu: { version: '10.0.2', machine: 'pc-i440fx-10.0', pid: 42, argv: ['qemu-system-x86_64', '-m', '256'] },
  ram: { bytes: 256 << 20, mainBlockId: 'pc.ram' },
  capture: { mode: 'Paused', wasRunning: true, after: 'resume' },
  stream: { offset: STREAM_OFFSET, channels: 4, directIO: true, endOffset: 300 << 20, structureCrc32: 1234 },
};

describe('snapshot header', () => {
  it('round-trips state and metadata', () => {
    for (const state of ['incomplete', 'complete'] as const) {
      const h = decodeHeader(encodeHeader(state, metadata));
      expect(h.state).toBe(state);
      expect(h.streamOffset).toBe(STREAM_OFFSET);
      expect(h.metadata).toEqual(metadata);
    }
  });

  it('refuses a buffer that is not a vmsnap file', () => {
    expect(() => decodeHeader(Buffer.from('QEVM and some other bytes, long enough'))).toThrow(/not a vmsnap snapshot/);
  });

  it('refuses any single flipped bit in the header', () => {
    const good = encodeHeader('complete', metadata);
    // every byte of the fixed part and a sample of the JSON
    const positions = [...Array(32).keys(), 70, 100, good.length - 1];
    for (const pos of positions) {
      const bad = Buffer.from(good);
      bad[pos]! ^= 0x10;
      expect(() => decodeHeader(bad)).toThrow(SnapshotFileError);
    }
  });

  it('refuses metadata that does not match the schema, naming the field', () => {
    const broken = { ...metadata, stream: { ...metadata.stream, channels: 0 } };
    // The message says what is allowed too (zod/mini has English messages only once configured).
    expect(() => decodeHeader(encodeHeader('complete', broken))).toThrow(/at stream\.channels: .*expected number to be >=1/);
    const noSocket = { ...metadata, vm: { name: 'demo' } } as unknown as SnapshotMetadata;
    expect(() => decodeHeader(encodeHeader('complete', noSocket))).toThrow(/at vm\.qmpSocket: .*expected string, received undefined/);
    const badMode = { ...metadata, capture: { ...metadata.capture, mode: 'Frozen' } } as unknown as SnapshotMetadata;
    expect(() => decodeHeader(encodeHeader('complete', badMode))).toThrow(/at capture\.mode: .*"Paused"\|"Live"/);
  });

  it('refuses a newer format version', () => {
    const buf = encodeHeader('complete', metadata);
    buf.writeUInt32LE(99, 8);
    expect(() => decodeHeader(buf)).toThrow(/format version 99/);
  });
});

describe('header authentication (the node key)', () => {
  const key = Buffer.alloc(32, 7);
  const trust = { key, snapshot: metadata.snapshot! };

  /** What a tenant's QEMU can do with its fd: rewrite the metadata and fix the CRC, but not the MAC. */
  function rewritten(buf: Buffer, edit: (m: SnapshotMetadata) => void): Buffer {
    const json = JSON.parse(buf.subarray(FIXED_BYTES).toString('utf8')) as SnapshotMetadata;
    edit(json);
    const body = Buffer.from(JSON.stringify(json), 'utf8');
    const out = Buffer.concat([buf.subarray(0, FIXED_BYTES), body]);
    out.writeUInt32LE(body.length, 24);
    out.writeUInt32LE(crc32(body, crc32(out.subarray(0, 28))), 28);
    return out;
  }

  it('reads a header it signed, for its own VMSnapshot', () => {
    const h = decodeHeader(encodeHeader('complete', metadata, key), 'f', trust);
    expect(h.authenticated).toBe(true);
    expect(h.metadata.snapshot).toEqual(trust.snapshot);
  });

  it('refuses a header rewritten with a good CRC (the argv a tenant would have run)', () => {
    const bad = rewritten(encodeHeader('complete', metadata, key), (m) => (m.qemu.argv = ['/vms/default/demo/evil.sh']));
    expect(decodeHeader(bad).metadata.qemu.argv).toEqual(['/vms/default/demo/evil.sh']); // the CRC alone cannot tell
    expect(() => decodeHeader(bad, 'f', trust)).toThrow(/f has a header this node's agent did not write \(its MAC does not match/);
  });

  it('refuses every single flipped byte, the MAC field included', () => {
    const good = encodeHeader('complete', metadata, key);
    for (const pos of [12, MAC_OFFSET, MAC_OFFSET + 31, FIXED_BYTES + 5]) {
      const bad = Buffer.from(good);
      bad[pos]! ^= 0x01;
      expect(() => decodeHeader(bad, 'f', trust)).toThrow(SnapshotFileError);
    }
  });

  it('refuses a header signed under another key (another node)', () => {
    expect(() => decodeHeader(encodeHeader('complete', metadata, Buffer.alloc(32, 8)), 'f', trust)).toThrow(/MAC does not match/);
  });

  it('refuses an unsigned header with the key, and reads it without (the CLI)', () => {
    const unsigned = encodeHeader('complete', metadata);
    expect(() => decodeHeader(unsigned, 'f', trust)).toThrow(/f has an unauthenticated header .* restore it with the CLI/);
    expect(decodeHeader(unsigned).authenticated).toBe(false);
  });

  it("refuses a header of another VMSnapshot's file (another namespace), naming both", () => {
    const other = { ...metadata, snapshot: { namespace: 'other', name: 'snap-1', uid: 'uid-9' } };
    expect(() => decodeHeader(encodeHeader('complete', other, key), 'f', trust)).toThrow(
      'f belongs to VMSnapshot other/snap-1 (uid uid-9), not to VMSnapshot default/snap-1 (uid uid-1) that it is restored from',
    );
    const none = { ...metadata, snapshot: undefined };
    expect(() => decodeHeader(encodeHeader('complete', none, key), 'f', trust)).toThrow(/f belongs to no VMSnapshot, not to VMSnapshot default\/snap-1/);
  });

  it('still reads a version 1 file (no MAC), as unauthenticated', () => {
    const v2 = encodeHeader('complete', { ...metadata, formatVersion: 1 });
    const json = v2.subarray(FIXED_BYTES);
    const v1 = Buffer.concat([v2.subarray(0, 32), json]);
    v1.writeUInt32LE(1, 8);
    v1.writeUInt32LE(crc32(json, crc32(v1.subarray(0, 28))), 28);
    expect(decodeHeader(v1).metadata.formatVersion).toBe(1);
    expect(() => decodeHeader(v1, 'f', trust)).toThrow(/unauthenticated header/);
  });
});
