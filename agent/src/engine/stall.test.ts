import fs from 'node:fs';
import { decideStall, readProcIoRchar, stallMessage, type StallTrack } from './stall.js';

const rule = { stallMs: 60_000, minStepBytes: 1 };

function run(samples: Array<{ bytes: number; token?: string; at: number }>, r = rule) {
  let track: StallTrack | undefined;
  const verdicts = samples.map((s) => {
    const v = decideStall(track, s, r);
    track = v.track;
    return v.stalled;
  });
  return { verdicts, track: track! };
}

describe('decideStall', () => {
  it('is stalled once the measure stood still for the whole period', () => {
    const { verdicts } = run([
      { bytes: 4096, at: 0 },
      { bytes: 4096, at: 30_000 },
      { bytes: 4096, at: 59_999 },
      { bytes: 4096, at: 60_000 },
    ]);
    expect(verdicts).toEqual([false, false, false, true]);
  });

  it('any growth restarts the period', () => {
    const { verdicts, track } = run([
      { bytes: 0, at: 0 },
      { bytes: 1 << 20, at: 50_000 },
      { bytes: 1 << 20, at: 100_000 },
      { bytes: 1 << 20, at: 110_000 },
    ]);
    expect(verdicts).toEqual([false, false, false, true]);
    expect(track).toMatchObject({ bytes: 1 << 20, since: 50_000, first: { bytes: 0, at: 0 } });
  });

  it('growth below the minimum step is noise, not progress', () => {
    const { verdicts } = run(
      [
        { bytes: 100, at: 0 },
        { bytes: 300, at: 20_000 },
        { bytes: 600, at: 40_000 },
        { bytes: 900, at: 60_000 },
      ],
      { stallMs: 60_000, minStepBytes: 64 * 1024 },
    );
    expect(verdicts).toEqual([false, false, false, true]);
  });

  it('a changed token (a rewrite of pages already allocated) is progress', () => {
    const { verdicts } = run([
      { bytes: 8192, token: '1', at: 0 },
      { bytes: 8192, token: '2', at: 59_000 },
      { bytes: 8192, token: '2', at: 100_000 },
      { bytes: 8192, token: '2', at: 119_000 },
    ]);
    expect(verdicts).toEqual([false, false, false, true]);
  });

  it('a shrinking measure is not progress', () => {
    expect(run([{ bytes: 8192, at: 0 }, { bytes: 0, at: 60_000 }]).verdicts).toEqual([false, true]);
  });
});

describe('stallMessage', () => {
  it('names the bytes seen and the time', () => {
    const track: StallTrack = { bytes: 3 << 20, since: 0, first: { bytes: 1 << 20, at: 0 } };
    expect(stallMessage('save', { idle: 'QEMU wrote nothing to the snapshot file', unit: 'allocated in the file' }, track, 61_400)).toBe(
      "the save stalled: QEMU wrote nothing to the snapshot file for 61 s (3Mi allocated in the file, 2Mi of it during the save), whatever QEMU's QMP reported",
    );
    expect(stallMessage('restore', { idle: 'QEMU read nothing from the snapshot file', unit: 'read by QEMU' }, { ...track, first: { bytes: 3 << 20, at: 0 } }, 30_000)).toBe(
      "the restore stalled: QEMU read nothing from the snapshot file for 30 s (3Mi read by QEMU, none of it during the restore), whatever QEMU's QMP reported",
    );
  });
});

describe('readProcIoRchar', () => {
  it('reads rchar from /proc/<pid>/io', () => {
    expect(readProcIoRchar('rchar: 123456\nwchar: 7\nsyscr: 3\n')).toBe(123456);
    expect(readProcIoRchar(fs.readFileSync('/proc/self/io', 'utf8'))).toBeGreaterThan(0);
    expect(() => readProcIoRchar('wchar: 7\n')).toThrow(/rchar/);
  });
});
