import { VMRestoreStatusSchema, VMSnapshotStatusSchema, type Condition, type VMSnapshotStatus } from '../../../api/index.js';
import { claimPatch, failedStatus, progressStatus, restoreSucceededStatus, saveSummary, snapshotSucceededStatus } from './status.js';

const now = new Date('2025-01-02T03:04:05.000Z');
const assigned: Condition = { type: 'Ready', status: 'False', reason: 'Assigned', message: 'assigned', lastTransitionTime: '2025-01-02T03:00:00.000Z' };
const obj = { metadata: { generation: 2, resourceVersion: '42' }, status: { conditions: [assigned] } };

/** A small save's outcome. */
const outcome = {
  path: '/s/ns/x.vms',
  bytes: 1 << 20,
  ramBytes: 1 << 30,
  durationMs: 10,
  vmPausedMs: 10,
  directIO: true,
  logicalBytes: 1 << 30,
  allocatedBytes: 1 << 20,
  qemu: { version: '10.0.2', machine: 'pc-i440fx-10.0' },
};

describe('status patches', () => {
  it('claims with the resourceVersion seen, InProgress and Ready=False', () => {
    const p = claimPatch<VMSnapshotStatus>(obj, 'node-a is saving the VM', now, { file: { path: '/s/ns/x.vms' } });
    expect(p.metadata).toEqual({ resourceVersion: '42' });
    expect(p.status).toMatchObject({ phase: 'InProgress', startTime: now.toISOString(), observedGeneration: 2, file: { path: '/s/ns/x.vms' } });
    // Ready stays False: lastTransitionTime does not move, the reason does.
    expect(p.status.conditions).toEqual([
      { ...assigned, reason: 'InProgress', message: 'node-a is saving the VM', observedGeneration: 2 },
      { type: 'Progressing', status: 'True', reason: 'InProgress', message: 'node-a is saving the VM', observedGeneration: 2, lastTransitionTime: now.toISOString() },
      { type: 'Failed', status: 'False', reason: 'InProgress', message: '', observedGeneration: 2, lastTransitionTime: now.toISOString() },
    ]);
    expect(VMSnapshotStatusSchema.safeParse(p.status).success).toBe(true);
  });

  it('reports a success with every field the printer columns read', () => {
    const s = snapshotSucceededStatus(
      obj,
      {
        path: '/s/ns/x.vms',
        bytes: 1 << 30,
        ramBytes: 2 * 2 ** 30,
        durationMs: 819.6,
        vmPausedMs: 900,
        directIO: false,
        directIOReason: 'tmpfs refuses O_DIRECT',
        logicalBytes: (2 * 2 ** 30) + (1 << 20),
        allocatedBytes: 1 << 30,
        qemu: { version: '10.0.2', machine: 'pc-i440fx-10.0' },
      },
      now,
    );
    expect(VMSnapshotStatusSchema.parse(s)).toEqual(s);
    expect(s).toMatchObject({
      phase: 'Succeeded',
      readyToUse: true,
      restoreSize: 2 * 2 ** 30,
      restoreSizeHuman: '2Gi',
      durationMs: 820,
      durationHuman: '820ms',
      throughputHuman: '1.2GiB/s',
      directIOUsed: false,
      progress: { bytesDone: 2 * 2 ** 30, bytesTotal: 2 * 2 ** 30, percent: 100 },
    });
    expect(s.conditions?.[0]).toMatchObject({ status: 'True', reason: 'Succeeded', lastTransitionTime: now.toISOString() });
    expect(s.conditions?.map((c) => [c.type, c.status])).toEqual([['Ready', 'True'], ['Progressing', 'False'], ['Failed', 'False']]);
    expect(s.hibernated).toBeUndefined();
    expect(saveSummary({ bytes: 1 << 30, durationMs: 800, path: '/p' })).toBe('saved 1GiB in 800ms (1.3GiB/s) to /p');
  });

  it('reports the disks frozen with the RAM and the digests, and nothing for a VM without either', () => {
    const disk = { device: 'drive0', argvPath: '/vms/a/disk.qcow2', base: '/vms/a/disk.qcow2', baseFormat: 'qcow2', virtualSize: 16 << 30, overlay: '/vms/a/disk.1.qcow2' };
    const s = snapshotSucceededStatus(obj, { ...outcome, disks: [disk], digests: { path: '/s/ns/x.vms.digests', algorithm: 'sha256' } }, now);
    expect(VMSnapshotStatusSchema.parse(s)).toEqual(s);
    // Only what the API publishes: the command-line path stays in the file's metadata.
    expect(s.disks).toEqual([{ device: 'drive0', base: '/vms/a/disk.qcow2', baseFormat: 'qcow2', virtualSize: 16 << 30, overlay: '/vms/a/disk.1.qcow2' }]);
    expect(s.digests).toEqual({ path: '/s/ns/x.vms.digests', algorithm: 'sha256' });
    const plain = snapshotSucceededStatus(obj, { ...outcome, disks: [], digests: { error: 'no space left' } }, now);
    expect(plain.disks).toBeUndefined();
    expect(plain.digests).toBeUndefined();
  });

  it('says how a live capture converged (status.capture), and nothing about it for a paused one', () => {
    const capture = { convergence: 'AutoConverge' as const, reason: 'x'.repeat(2000), downtimeLimitMs: 10, cpuThrottlePeakPercent: 99 };
    const s = snapshotSucceededStatus(obj, { ...outcome, capture }, now);
    expect(VMSnapshotStatusSchema.parse(s)).toEqual(s);
    expect(s.capture).toEqual({ ...capture, reason: 'x'.repeat(1024) });
    expect(snapshotSucceededStatus(obj, outcome, now).capture).toBeUndefined();
  });

  it('marks a hibernation (afterSnapshot Stop): the file is now the VM\'s only state', () => {
    const stop = { ...obj, status: { ...obj.status, effective: { afterSnapshot: 'Stop' } } };
    const outcome = { path: '/p', bytes: 1, ramBytes: 1, durationMs: 1, vmPausedMs: 1, directIO: true, logicalBytes: 1, allocatedBytes: 1, qemu: { version: 'v', machine: 'm' } };
    expect(snapshotSucceededStatus(stop, outcome, now).hibernated).toBe(true);
  });

  it('reports a failure with error and reason', () => {
    const s = failedStatus(obj, 'Cancelled', 'the agent was stopped', now);
    expect(s.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([['Ready', 'False', 'Cancelled'], ['Progressing', 'False', 'Cancelled'], ['Failed', 'True', 'Cancelled']]);
    expect(VMRestoreStatusSchema.parse(s)).toEqual(s);
    expect(s).toMatchObject({ phase: 'Failed', error: { time: now.toISOString(), message: 'the agent was stopped' }, completionTime: now.toISOString() });
    expect(s.conditions?.[0]).toMatchObject({ status: 'False', reason: 'Cancelled' });
  });

  it('reports a restore', () => {
    const s = restoreSucceededStatus(
      obj,
      { path: '/p', bytes: 64 << 20, ramBytes: 256 * 2 ** 20, durationMs: 1500, loadMs: 500, downtimeMs: 1700, directIO: true, running: true, target: 'ns/vm' },
      now,
    );
    expect(VMRestoreStatusSchema.parse(s)).toEqual(s);
    expect(s).toMatchObject({ phase: 'Succeeded', durationMs: 1500, downtimeMs: 1700, throughputMiBps: 128, restoreSize: 256 * 2 ** 20, directIOUsed: true });
  });

  it('reports a lazy restore, and a lazy one that fell back to eager', () => {
    const base = { path: '/p', bytes: 1 << 20, ramBytes: 256 * 2 ** 20, durationMs: 90, loadMs: 10, downtimeMs: 90, directIO: false, running: true, target: 'ns/vm' };
    const lazy = { file: '/p', mappedBytes: 256 * 2 ** 20, residentBytes: 0, residentPercent: 0, vmRunning: true };
    const s = restoreSucceededStatus(obj, { ...base, mode: 'lazy', lazy }, now);
    expect(VMRestoreStatusSchema.parse(s)).toEqual(s);
    expect(s).toMatchObject({ restoreMode: 'Lazy', lazy });
    expect(s.throughputMiBps).toBeUndefined(); // nothing was read: no throughput to speak of
    expect(s.conditions?.[0]?.message).toMatch(/lazily .*256Mi.*mapped from \/p/);
    const e = restoreSucceededStatus(obj, { ...base, mode: 'eager', lazyFallbackReason: 'the VM has a VFIO device' }, now);
    expect(e).toMatchObject({ restoreMode: 'Eager', restoreModeReason: 'the VM has a VFIO device' });
    expect(e.conditions?.[0]?.message).toMatch(/^restored eagerly \(a lazy restore is not possible: the VM has a VFIO device\)/);
  });

  it('computes progress percent without rounding up to 100', () => {
    expect(progressStatus(999, 1000).progress.percent).toBe(99.9);
    expect(progressStatus(9999, 10000).progress.percent).toBe(99.9);
    expect(progressStatus(0, 0).progress.percent).toBe(0);
  });
});
