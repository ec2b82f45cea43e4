// Every decision about an error reads its code, never its text: each case below gives an error
// whose message says the opposite of its code, so a classifier that read the message would fail.
import { Reason } from '../../api/protocol.js';
import { Cancellation } from './daemon/cancellation.js';
import { RestoreRefused } from './daemon/restore-runner.js';
import { SaveError, explainSaveFailure } from './engine/save.js';
import { MigrationStalledError } from './engine/stall.js';
import { reasonOf, VmsnapError } from './errors.js';
import { QmpCommandError, QmpConnectError } from './qmp/errors.js';

describe('reasonOf', () => {
  it('is the reason the error was thrown with', () => {
    expect(reasonOf(new MigrationStalledError('the save failed', 0, 60_000))).toBe(Reason.MigrationStalled);
    expect(reasonOf(new RestoreRefused(Reason.SnapshotNotFound, 'QEMU stalled'))).toBe(Reason.SnapshotNotFound);
    expect(reasonOf(new Cancellation('failed', Reason.DeadlineExceeded, 'migration stalled'))).toBe(Reason.DeadlineExceeded);
    expect(reasonOf(new VmsnapError('x', { reason: Reason.VMNotFound }))).toBe(Reason.VMNotFound);
  });

  it('is Failed for errors without one, whatever they say', () => {
    expect(reasonOf(new Error('MigrationStalled: QEMU wrote nothing'))).toBe(Reason.Failed);
    expect(reasonOf(new SaveError('QEMU stalled; VM not found'))).toBe(Reason.Failed);
    expect(reasonOf('MigrationStalled')).toBe(Reason.Failed);
    expect(reasonOf(undefined)).toBe(Reason.Failed);
  });
});

describe('QMP errors keep what QEMU and the socket said as fields', () => {
  it("a command error keeps QMP's error class", () => {
    const e = new QmpCommandError('migrate', 'DeviceNotFound', 'GenericError happened');
    expect(e.errorClass).toBe('DeviceNotFound');
    expect(e.reason).toBe(Reason.Failed);
  });

  it("a connect error keeps the socket's errno code: absent is ENOENT or ECONNREFUSED only", () => {
    const err = (code: string) => Object.assign(new Error('irrelevant'), { code });
    expect(new QmpConnectError('/s', err('ENOENT')).absent).toBe(true);
    expect(new QmpConnectError('/s', err('ECONNREFUSED'))).toMatchObject({ absent: true, nobodyListens: true });
    expect(new QmpConnectError('/s', err('EACCES'))).toMatchObject({ absent: false, nobodyListens: false, code: 'EACCES' });
    expect(new QmpConnectError('/s', err('ENOENT')).nobodyListens).toBe(false);
  });
});

describe('explainSaveFailure', () => {
  const hint = /free space for \/snap\/f\.vms: it needs up to 1Gi/;
  it("adds what to do when QEMU's write found the disk full (typed at the failure)", () => {
    const out = explainSaveFailure(new SaveError("QEMU's save failed: some text", { noSpace: true }), '/snap/f.vms', 1 << 30) as SaveError;
    expect(out.message).toMatch(hint);
    expect(out.noSpace).toBe(true);
  });

  it('adds it for an ENOSPC of our own writes', () => {
    const enospc = Object.assign(new Error('write failed'), { code: 'ENOSPC' });
    expect((explainSaveFailure(enospc, '/snap/f.vms', 1 << 30) as Error).message).toMatch(hint);
  });

  it('leaves other failures alone, even when their text speaks of space', () => {
    const e = new SaveError("QEMU's save failed: No space left on device");
    expect(explainSaveFailure(e, '/snap/f.vms', 1 << 30)).toBe(e);
    const plain = new Error('ENOSPC');
    expect(explainSaveFailure(plain, '/snap/f.vms', 1 << 30)).toBe(plain);
    // Before the RAM size is known there is nothing to say.
    const early = new SaveError('x', { noSpace: true });
    expect(explainSaveFailure(early, '/snap/f.vms', undefined)).toBe(early);
  });
});
