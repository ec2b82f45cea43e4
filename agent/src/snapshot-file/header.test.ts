import { encodeHeader, SnapshotFileError, STREAM_OFFSET } from './header.js';
import { decodeHeader } from './read.js';
import type { SnapshotMetadata } from './metadata.js';

const metadata: SnapshotMetadata = {
  formatVersion: 1,
  createdAt: '2026-11-21T00:00:00.000Z',
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
    const positions = [...Array(32).keys(), 40, 100, good.length - 1];
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
