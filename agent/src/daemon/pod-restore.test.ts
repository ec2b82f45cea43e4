import { Reason } from '../../../api/index.js';
import { decidePodRestore, type PodRestoreFacts } from './pod-restore.js';

const facts = (over: Partial<PodRestoreFacts> = {}): PodRestoreFacts => ({
  namespace: 'team-a',
  sourceVMName: 'web',
  targetVMName: 'web',
  replaceRunning: false,
  header: { namespace: 'team-a', name: 'web', disks: [] },
  qmp: { kind: 'answers', status: 'running' },
  nodeName: 'node-a',
  ...over,
});

describe('decidePodRestore', () => {
  it('refuses a copy the operator made no pod for, saying what to do instead', () => {
    expect(decidePodRestore(facts({ targetVMName: 'web-copy' }))).toMatchObject({ action: 'refuse', message: expect.stringMatching(/the operator made no pod for this copy .*restore into VM web itself \(omit spec.targetVMName\)/) });
  });

  it('restores frozen disks into a fresh QEMU only (one waiting runs on the pod\'s own images), and refuses records that do not fit the pod', () => {
    const disks = { header: { namespace: 'team-a', name: 'web', disks: ['virtio0'] } };
    expect(decidePodRestore(facts({ ...disks, qmp: { kind: 'answers', status: 'inmigrate' } }))).toEqual({ action: 'restore', restartIncoming: true, replacing: false });
    expect(decidePodRestore(facts({ ...disks, replaceRunning: true }))).toEqual({ action: 'restore', restartIncoming: true, replacing: true });
    expect(decidePodRestore(facts({ ...disks, diskRefusal: 'disk virtio0: outside' }))).toMatchObject({ action: 'refuse', reason: Reason.Failed, message: "the snapshot's writable disks cannot be restored into VM pod team-a/web: disk virtio0: outside" });
  });

  it("refuses a file whose header names another VM (the tenant's QEMU could write the file)", () => {
    expect(decidePodRestore(facts({ header: { namespace: 'team-b', name: 'web', disks: [] } }))).toMatchObject({ action: 'refuse', message: expect.stringMatching(/says it holds VM team-b\/web/) });
  });

  it('needs a Running VM pod that can be reached safely', () => {
    expect(decidePodRestore(facts({ qmp: undefined }))).toMatchObject({ action: 'refuse', reason: Reason.VMNotFound, message: expect.stringMatching(/no Running pod labelled vmsnap.io\/vm=web on node node-a/) });
    expect(decidePodRestore(facts({ qmp: { kind: 'unreachable', message: 'refused: symlink' } }))).toMatchObject({ action: 'refuse', reason: Reason.VMRunning, message: expect.stringMatching(/cannot be reached safely: refused: symlink/) });
  });

  it('keeps a running VM unless spec.ifRunning is Replace, then has the launcher restart it', () => {
    expect(decidePodRestore(facts())).toMatchObject({ action: 'refuse', reason: Reason.VMRunning, message: expect.stringMatching(/ifRunning is Fail/) });
    expect(decidePodRestore(facts({ replaceRunning: true }))).toEqual({ action: 'restore', restartIncoming: true, replacing: true });
    expect(decidePodRestore(facts({ qmp: { kind: 'answers', status: 'paused' } }))).toMatchObject({ action: 'refuse', reason: Reason.VMRunning });
  });

  it('restarts a stopped QEMU, uses one already waiting, and never interrupts a load', () => {
    expect(decidePodRestore(facts({ qmp: { kind: 'absent' } }))).toEqual({ action: 'restore', restartIncoming: true, replacing: false });
    expect(decidePodRestore(facts({ qmp: { kind: 'answers', status: 'inmigrate' } }))).toEqual({ action: 'restore', restartIncoming: false, replacing: false });
    expect(decidePodRestore(facts({ qmp: { kind: 'answers', status: 'inmigrate', migration: 'failed' } }))).toEqual({ action: 'restore', restartIncoming: true, replacing: false });
    expect(decidePodRestore(facts({ qmp: { kind: 'answers', status: 'inmigrate', migration: 'active' } }))).toMatchObject({ action: 'refuse', message: expect.stringMatching(/already loading/) });
  });

  it('restores a copy or a wake only into the pod the operator made for it', () => {
    const made = { name: 'web-copy', uid: 'u-made' };
    const waiting = { kind: 'answers', status: 'inmigrate', migration: 'none' } as const;
    expect(decidePodRestore(facts({ targetVMName: 'web-copy', madePod: made, foundPodUid: 'u-made', qmp: waiting }))).toEqual({ action: 'restore', restartIncoming: false, replacing: false });
    // Its launcher came up stopped (QEMU failed to start): restarted with -incoming defer.
    expect(decidePodRestore(facts({ targetVMName: 'web-copy', madePod: made, foundPodUid: 'u-made', qmp: { kind: 'absent' } }))).toMatchObject({ action: 'restore', restartIncoming: true });
    // Another pod now claims the VM name: never restored into.
    expect(decidePodRestore(facts({ targetVMName: 'web-copy', madePod: made, foundPodUid: 'u-other', qmp: waiting }))).toMatchObject({ action: 'refuse', reason: Reason.VMRunning, message: expect.stringMatching(/other than web-copy \(uid u-made\)/) });
    expect(decidePodRestore(facts({ targetVMName: 'web-copy', madePod: made, qmp: undefined }))).toMatchObject({ action: 'refuse', reason: Reason.VMNotFound, message: expect.stringMatching(/pod web-copy, made for this restore, is not a Running VM pod/) });
    // A wake into a new pod: the same checks, same VM name.
    expect(decidePodRestore(facts({ madePod: { name: 'web', uid: 'u-new' }, foundPodUid: 'u-new', qmp: waiting }))).toEqual({ action: 'restore', restartIncoming: false, replacing: false });
  });
});
