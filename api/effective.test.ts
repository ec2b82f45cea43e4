import {
  API_VERSION,
  DEFAULT_CHANNELS,
  effectiveDeletionPolicy,
  restoreVerify,
  snapshotDigests,
  effectiveRestoreSpec,
  effectiveSnapshotSpec,
  resolveSnapshotSpec,
  selectSnapshotClass,
  type VMSnapshotClass,
} from './index.js';

function cls(name: string, fields: Partial<VMSnapshotClass>, opts: { isDefault?: boolean; created?: string } = {}): VMSnapshotClass {
  return {
    apiVersion: API_VERSION,
    kind: 'VMSnapshotClass',
    metadata: {
      name,
      ...(opts.created ? { creationTimestamp: opts.created } : {}),
      ...(opts.isDefault ? { annotations: { 'vmsnap.io/is-default-class': 'true' } } : {}),
    },
    ...fields,
  } as VMSnapshotClass;
}

describe('effectiveSnapshotSpec', () => {
  it('uses built-in defaults without a class', () => {
    expect(effectiveSnapshotSpec({ vmName: 'demo' })).toEqual({
      channels: DEFAULT_CHANNELS,
      directIO: 'Auto',
      captureMode: 'Paused',
      afterSnapshot: 'Resume',
      failureDeadline: '10m',
      deletionPolicy: 'Delete',
      digests: 'None',
    });
  });

  it('takes class values where the spec is silent, and the spec wins where it speaks', () => {
    const fast = cls('fast', { parallelism: { channels: 16 }, directIO: 'Always', deletionPolicy: 'Retain', digests: 'Record' });
    expect(effectiveSnapshotSpec({ vmName: 'demo', directIO: 'Never' }, fast)).toEqual({
      className: 'fast',
      channels: 16,
      directIO: 'Never',
      captureMode: 'Paused',
      afterSnapshot: 'Resume',
      failureDeadline: '10m',
      deletionPolicy: 'Retain',
      digests: 'Record',
    });
    // spec.digests: None turns the class's verification mode off for this snapshot; the boolean it replaced is still read.
    expect(effectiveSnapshotSpec({ vmName: 'demo', digests: 'None' }, fast).digests).toBe('None');
    expect(effectiveSnapshotSpec({ vmName: 'demo', digests: false }, fast).digests).toBe('None');
    expect(effectiveSnapshotSpec({ vmName: 'demo' }, cls('old', { digests: true } as never)).digests).toBe('Record');
  });

  it('falls through a partial class to built-ins', () => {
    const partial = cls('partial', { deletionPolicy: 'Retain' });
    const eff = effectiveSnapshotSpec({ vmName: 'demo', parallelism: { channels: 2 }, captureMode: 'Live', afterSnapshot: 'Stop', failureDeadline: '1h' }, partial);
    expect(eff).toMatchObject({ channels: 2, directIO: 'Auto', captureMode: 'Live', afterSnapshot: 'Stop', failureDeadline: '1h', deletionPolicy: 'Retain' });
  });

  it('is pure', () => {
    const spec = { vmName: 'demo' };
    const c = cls('c', { parallelism: { channels: 3 } });
    const before = JSON.stringify([spec, c]);
    effectiveSnapshotSpec(spec, c);
    expect(JSON.stringify([spec, c])).toBe(before);
  });
});

describe('selectSnapshotClass', () => {
  const a = cls('a', {}, { isDefault: true, created: '2025-01-01T00:00:00Z' });
  const b = cls('b', {}, { isDefault: true, created: '2025-02-01T00:00:00Z' });
  const named = cls('named', {});

  it('uses the named class, and fails naming spec.className when it is missing', () => {
    expect(selectSnapshotClass('named', [a, named])).toMatchObject({ ok: true, class: named });
    const missing = selectSnapshotClass('nope', [a]);
    expect(missing.ok).toBe(false);
    expect(!missing.ok && missing.error).toMatch(/spec\.className/);
  });

  it('uses the default class, the newest when several are marked', () => {
    expect(selectSnapshotClass(undefined, [named, a])).toMatchObject({ ok: true, class: a });
    expect(selectSnapshotClass(undefined, [a, b, named])).toMatchObject({ ok: true, class: b });
  });

  it('uses no class when none is default', () => {
    const sel = selectSnapshotClass(undefined, [named]);
    expect(sel.ok && sel.class).toBeFalsy();
  });

  it('resolveSnapshotSpec combines both', () => {
    const def = cls('def', { parallelism: { channels: 12 } }, { isDefault: true });
    const res = resolveSnapshotSpec({ vmName: 'demo' }, [def]);
    expect(res.ok && res.effective).toMatchObject({ className: 'def', channels: 12 });
    expect(resolveSnapshotSpec({ vmName: 'demo', className: 'missing' }, [def]).ok).toBe(false);
  });
});

describe('effectiveDeletionPolicy', () => {
  it('prefers the spec, then the recorded value, then Delete', () => {
    expect(effectiveDeletionPolicy({ spec: { deletionPolicy: 'Retain' }, status: { effective: { deletionPolicy: 'Delete' } } })).toBe('Retain');
    expect(effectiveDeletionPolicy({ spec: {}, status: { effective: { deletionPolicy: 'Retain' } } })).toBe('Retain');
    expect(effectiveDeletionPolicy({ spec: {} })).toBe('Delete');
  });
});

describe('effectiveRestoreSpec', () => {
  const snap = { metadata: { name: 'demo-snapshot' }, spec: { vmName: 'demo' }, status: { effective: { channels: 6 } } };

  it("restores into the snapshot's VM with its channel count by default", () => {
    expect(effectiveRestoreSpec({ snapshotName: 'demo-snapshot' }, snap)).toEqual({
      snapshotName: 'demo-snapshot',
      sourceVMName: 'demo',
      targetVMName: 'demo',
      copy: false,
      channels: 6,
      directIO: 'Auto',
      ifRunning: 'Fail',
      afterRestore: 'Running',
      restoreMode: 'Eager',
      failureDeadline: '10m',
      verify: 'None',
    });
  });

  it('reads the booleans verify and prefetch replaced, and reports the enums', () => {
    const old = effectiveRestoreSpec({ snapshotName: 's', restoreMode: 'Lazy', verify: true, prefetch: false }, snap);
    expect(old).toMatchObject({ verify: 'Digests', prefetch: 'None' });
    expect(effectiveRestoreSpec({ snapshotName: 's', verify: 'Digests', failureDeadline: '90s' }, snap)).toMatchObject({ verify: 'Digests', failureDeadline: '90s' });
    expect(restoreVerify({ spec: { verify: true } })).toBe('Digests');
    expect(restoreVerify({ spec: {}, status: { effective: { verify: 'Digests' } } })).toBe('Digests');
    expect(snapshotDigests({ spec: { digests: true } })).toBe('Record');
    expect(snapshotDigests({ spec: {}, status: { effective: { digests: 'Record' } } })).toBe('Record');
    expect(snapshotDigests({ spec: {} })).toBe('None');
  });

  it('names the snapshot chosen, which a latestSnapshotOf restore does not name itself', () => {
    expect(effectiveRestoreSpec({ latestSnapshotOf: 'demo' }, snap)).toMatchObject({ snapshotName: 'demo-snapshot', sourceVMName: 'demo', targetVMName: 'demo' });
  });

  it('restores a copy under another name with explicit settings', () => {
    expect(
      effectiveRestoreSpec(
        { snapshotName: 's', targetVMName: 'demo-copy', parallelism: { channels: 2 }, directIO: 'Never', ifRunning: 'Replace', afterRestore: 'Paused', restoreMode: 'Lazy' },
        { metadata: { name: 's' }, spec: { vmName: 'demo' } },
      ),
    ).toEqual({
      snapshotName: 's',
      sourceVMName: 'demo',
      targetVMName: 'demo-copy',
      copy: true,
      channels: 2,
      directIO: 'Never',
      ifRunning: 'Replace',
      afterRestore: 'Paused',
      restoreMode: 'Lazy',
      failureDeadline: '10m',
      verify: 'None',
      prefetch: 'Background',
    });
  });
});
