import {
  API_VERSION,
  AgentConfigSchema,
  operationSlots,
  formatZodError,
  VMInventorySchema,
  VMRestoreSchema,
  VMSnapshotClassSchema,
  VMSnapshotSchema,
  VMSnapshotStatusSchema,
} from './index.js';

const snapshot = (spec: Record<string, unknown>) => ({
  apiVersion: API_VERSION,
  kind: 'VMSnapshot',
  metadata: { name: 'demo-snapshot', namespace: 'default' },
  spec,
});

const restore = (spec: Record<string, unknown>) => ({
  apiVersion: API_VERSION,
  kind: 'VMRestore',
  metadata: { name: 'demo-restore', namespace: 'default' },
  spec,
});

/** The dotted path of every issue, for asserting that an error names the field. */
function issuePaths(result: { success: boolean; error?: { issues: Array<{ path: PropertyKey[] }> } }): string[] {
  expect(result.success).toBe(false);
  return result.error!.issues.map((i) => i.path.map(String).join('.'));
}

describe('VMSnapshot', () => {
  it('accepts the minimal spec and fills built-in defaults that are not class-controlled', () => {
    const parsed = VMSnapshotSchema.parse(snapshot({ vmName: 'demo' }));
    expect(parsed.spec).toEqual({
      vmName: 'demo',
      captureMode: 'Paused',
      afterSnapshot: 'Resume',
      failureDeadline: '10m',
    });
    // class-controlled fields stay unset so a class can still supply them
    expect(parsed.spec.parallelism).toBeUndefined();
    expect(parsed.spec.directIO).toBeUndefined();
    expect(parsed.spec.deletionPolicy).toBeUndefined();
  });

  it('accepts every field', () => {
    const spec = {
      vmName: 'demo',
      className: 'fast.nvme',
      parallelism: { channels: 64 },
      directIO: 'Always',
      captureMode: 'Live',
      afterSnapshot: 'Stop',
      failureDeadline: '1h30m',
      deletionPolicy: 'Retain',
    };
    expect(VMSnapshotSchema.parse(snapshot(spec)).spec).toEqual(spec);
  });

  it('reads spec.digests as the enum, and the boolean it replaced as Record or None', () => {
    expect(VMSnapshotSchema.parse(snapshot({ vmName: 'd', digests: 'Record' })).spec.digests).toBe('Record');
    expect(VMSnapshotSchema.parse(snapshot({ vmName: 'd', digests: true })).spec.digests).toBe('Record');
    expect(VMSnapshotSchema.parse(snapshot({ vmName: 'd', digests: false })).spec.digests).toBe('None');
  });

  it.each([
    [{}, 'spec.vmName'],
    [{ vmName: 'Demo' }, 'spec.vmName'],
    [{ vmName: 'a'.repeat(64) }, 'spec.vmName'],
    [{ vmName: 'demo', parallelism: { channels: 0 } }, 'spec.parallelism.channels'],
    [{ vmName: 'demo', parallelism: { channels: 65 } }, 'spec.parallelism.channels'],
    [{ vmName: 'demo', parallelism: { channels: 2.5 } }, 'spec.parallelism.channels'],
    [{ vmName: 'demo', directIO: 'Sometimes' }, 'spec.directIO'],
    [{ vmName: 'demo', captureMode: 'paused' }, 'spec.captureMode'],
    [{ vmName: 'demo', afterSnapshot: 'Hibernate' }, 'spec.afterSnapshot'],
    [{ vmName: 'demo', failureDeadline: '10 minutes' }, 'spec.failureDeadline'],
    [{ vmName: 'demo', failureDeadline: '0s' }, 'spec.failureDeadline'],
    [{ vmName: 'demo', failureDeadline: '200h' }, 'spec.failureDeadline'],
    [{ vmName: 'demo', deletionPolicy: 'Keep' }, 'spec.deletionPolicy'],
    [{ vmName: 'demo', className: 'Fast_Class' }, 'spec.className'],
    [{ vmName: 'demo', digests: 'sha256' }, 'spec.digests'],
    [{ vmName: 'demo', digests: 1 }, 'spec.digests'],
  ])('refuses %j naming %s', (spec, path) => {
    expect(issuePaths(VMSnapshotSchema.safeParse(snapshot(spec)))).toContain(path);
  });

  it('refuses a wrong apiVersion or kind', () => {
    expect(issuePaths(VMSnapshotSchema.safeParse({ ...snapshot({ vmName: 'demo' }), apiVersion: 'vmsnap.io/v1' }))).toContain('apiVersion');
    expect(issuePaths(VMSnapshotSchema.safeParse({ ...snapshot({ vmName: 'demo' }), kind: 'VMRestore' }))).toContain('kind');
  });

  it('accepts a full status as the agent writes it', () => {
    const status = {
      phase: 'Succeeded',
      conditions: [
        { type: 'Ready', status: 'True', reason: 'Saved', message: 'snapshot complete', lastTransitionTime: '2025-01-02T03:04:05Z', observedGeneration: 1 },
      ],
      observedGeneration: 1,
      nodeName: 'node-a',
      readyToUse: true,
      restoreSize: 4 * 1024 ** 3,
      restoreSizeHuman: '4Gi',
      progress: { bytesDone: 100, bytesTotal: 100, percent: 100 },
      startTime: '2025-01-02T03:04:00.123Z',
      completionTime: '2025-01-02T03:04:05Z',
      durationMs: 5000,
      durationHuman: '5s',
      vmPausedMs: 4900,
      throughputMiBps: 819.2,
      throughputHuman: '819.2MiB/s',
      directIOUsed: false,
      directIOReason: 'tmpfs refuses O_DIRECT',
      effective: { channels: 4, directIO: 'Auto', captureMode: 'Paused', afterSnapshot: 'Resume', failureDeadline: '10m', deletionPolicy: 'Delete' },
      file: { path: '/var/lib/vmsnap/snapshots/default/demo-snapshot.vmsnap', logicalBytes: 4 * 1024 ** 3, allocatedBytes: 1024 ** 3 },
      qemu: { version: '10.0.2', machine: 'pc-q35-10.0' },
      error: { time: '2025-01-02T03:04:05Z', message: 'none' },
    };
    expect(VMSnapshotStatusSchema.parse(status)).toEqual(status);
  });

  it('refuses a bad status naming the field', () => {
    expect(issuePaths(VMSnapshotStatusSchema.safeParse({ phase: 'Done' }))).toContain('phase');
    expect(issuePaths(VMSnapshotStatusSchema.safeParse({ progress: { bytesDone: 1, bytesTotal: 2, percent: 120 } }))).toContain('progress.percent');
    expect(issuePaths(VMSnapshotStatusSchema.safeParse({ startTime: 'yesterday' }))).toContain('startTime');
    expect(
      issuePaths(VMSnapshotStatusSchema.safeParse({ conditions: [{ type: 'Ready', status: 'Yes', reason: 'X', lastTransitionTime: '2025-01-02T03:04:05Z' }] })),
    ).toContain('conditions.0.status');
  });
});

describe('VMRestore', () => {
  it('accepts the minimal spec and fills defaults', () => {
    expect(VMRestoreSchema.parse(restore({ snapshotName: 'demo-snapshot' })).spec).toEqual({
      snapshotName: 'demo-snapshot',
      ifRunning: 'Fail',
      afterRestore: 'Running',
      restoreMode: 'Eager',
      failureDeadline: '10m',
    });
  });

  it('reads the booleans the enums verify and prefetch replaced; a bad value names the field and the allowed values', () => {
    expect(VMRestoreSchema.parse(restore({ snapshotName: 'd', verify: true, prefetch: false })).spec).toMatchObject({ verify: 'Digests', prefetch: 'None' });
    expect(VMRestoreSchema.parse(restore({ snapshotName: 'd', verify: 'None', prefetch: 'Background' })).spec).toMatchObject({ verify: 'None', prefetch: 'Background' });
    const bad = VMRestoreSchema.safeParse(restore({ snapshotName: 'd', verify: 'yes' }));
    expect(bad.success ? '' : formatZodError(bad.error)).toBe('spec.verify: verify must be one of None, Digests (true and false are read as Digests and None)');
    const badDeadline = VMRestoreSchema.safeParse(restore({ snapshotName: 'd', failureDeadline: '0s' }));
    expect(badDeadline.success ? '' : formatZodError(badDeadline.error)).toMatch(/^spec.failureDeadline: failureDeadline must be between 1s and 168h/);
  });

  it('accepts the latest snapshot of a VM instead of a snapshot name', () => {
    expect(VMRestoreSchema.parse(restore({ latestSnapshotOf: 'demo' })).spec).toMatchObject({ latestSnapshotOf: 'demo' });
    const both = VMRestoreSchema.safeParse(restore({ snapshotName: 'demo-snapshot', latestSnapshotOf: 'demo' }));
    expect(both.success ? '' : formatZodError(both.error)).toMatch(/spec\.snapshotName: exactly one of snapshotName .* or latestSnapshotOf/);
  });

  it('accepts a lazy copy', () => {
    const spec = {
      snapshotName: 'demo-snapshot',
      targetVMName: 'demo-copy',
      parallelism: { channels: 8 },
      directIO: 'Never',
      ifRunning: 'Replace',
      afterRestore: 'Paused',
      restoreMode: 'Lazy',
      failureDeadline: '10m',
    };
    expect(VMRestoreSchema.parse(restore(spec)).spec).toEqual(spec);
  });

  it.each([
    [{}, 'spec.snapshotName'],
    [{ snapshotName: 'Demo' }, 'spec.snapshotName'],
    [{ snapshotName: 'demo', targetVMName: 'demo.copy' }, 'spec.targetVMName'],
    [{ snapshotName: 'demo', restoreMode: 'Instant' }, 'spec.restoreMode'],
    [{ snapshotName: 'demo', ifRunning: 'Kill' }, 'spec.ifRunning'],
    [{ snapshotName: 'demo', afterRestore: 'Stopped' }, 'spec.afterRestore'],
    [{ snapshotName: 'demo', parallelism: { channels: 100 } }, 'spec.parallelism.channels'],
    [{ snapshotName: 'demo', latestSnapshotOf: 'demo' }, 'spec.snapshotName'],
    [{ latestSnapshotOf: 'Demo' }, 'spec.latestSnapshotOf'],
    [{ snapshotName: 'demo', restoreMode: 'Lazy', directIO: 'Always' }, 'spec.directIO'],
    [{ snapshotName: 'demo', failureDeadline: '10 minutes' }, 'spec.failureDeadline'],
    [{ snapshotName: 'demo', prefetch: 'Eager' }, 'spec.prefetch'],
  ])('refuses %j naming %s', (spec, path) => {
    expect(issuePaths(VMRestoreSchema.safeParse(restore(spec)))).toContain(path);
  });
});

describe('VMSnapshotClass', () => {
  it('accepts top-level settings and an empty class', () => {
    const cls = {
      apiVersion: API_VERSION,
      kind: 'VMSnapshotClass',
      metadata: { name: 'default', annotations: { 'vmsnap.io/is-default-class': 'true' } },
      parallelism: { channels: 8 },
      directIO: 'Never',
      deletionPolicy: 'Retain',
    };
    expect(VMSnapshotClassSchema.parse(cls)).toEqual(cls);
    expect(VMSnapshotClassSchema.parse({ apiVersion: API_VERSION, kind: 'VMSnapshotClass', metadata: { name: 'x' } })).toBeTruthy();
  });

  it('refuses bad settings naming the field', () => {
    const bad = { apiVersion: API_VERSION, kind: 'VMSnapshotClass', metadata: { name: 'x' }, parallelism: { channels: 65 }, deletionPolicy: 'Maybe' };
    expect(issuePaths(VMSnapshotClassSchema.safeParse(bad))).toEqual(expect.arrayContaining(['parallelism.channels', 'deletionPolicy']));
  });
});

describe('VMInventory', () => {
  it('accepts what an agent publishes', () => {
    const inv = {
      apiVersion: API_VERSION,
      kind: 'VMInventory',
      metadata: { name: 'node-a' },
      status: {
        nodeName: 'node-a',
        updatedTime: '2025-01-02T03:04:05Z',
        vmCount: 1,
        vms: [{ namespace: 'default', name: 'demo', qmpSocket: '/var/lib/vmsnap/vms/default/demo/qmp.sock', state: 'running', memoryBytes: 1073741824, qemuVersion: '10.0.2' }],
      },
    };
    expect(VMInventorySchema.parse(inv)).toEqual(inv);
    const bad = { ...inv, status: { vms: [{ namespace: 'default', name: 'demo', state: 'running' }] } };
    expect(issuePaths(VMInventorySchema.safeParse(bad))).toContain('status.vms.0.qmpSocket');
  });
});

describe('AgentConfig', () => {
  it('has the documented defaults', () => {
    expect(AgentConfigSchema.parse({})).toEqual({
      vmSource: 'sockets',
      kubeletRootDir: '/var/lib/kubelet',
      vmRoot: '/var/lib/vmsnap/vms',
      storageRoot: '/var/lib/vmsnap/snapshots',
      socketGlobs: ['*/*/qmp.sock'],
      inventoryIntervalSeconds: 30,
      maxConcurrentOperations: 2,
      stallTimeoutSeconds: 60,
    });
    expect(operationSlots(AgentConfigSchema.parse({}))).toEqual({ total: 2, perNamespace: 1 });
    expect(operationSlots(AgentConfigSchema.parse({ maxConcurrentOperations: 8 }))).toEqual({ total: 8, perNamespace: 7 });
    expect(operationSlots(AgentConfigSchema.parse({ maxConcurrentOperations: 8, maxOperationsPerNamespace: 3 }))).toEqual({ total: 8, perNamespace: 3 });
    expect(operationSlots(AgentConfigSchema.parse({ maxConcurrentOperations: 1 }))).toEqual({ total: 1, perNamespace: 1 });
  });

  it('refuses a per-namespace share that lets one namespace hold every slot', () => {
    expect(issuePaths(AgentConfigSchema.safeParse({ maxConcurrentOperations: 4, maxOperationsPerNamespace: 4 }))).toContain('maxOperationsPerNamespace');
    expect(issuePaths(AgentConfigSchema.safeParse({ maxConcurrentOperations: 1, maxOperationsPerNamespace: 2 }))).toContain('maxOperationsPerNamespace');
    expect(issuePaths(AgentConfigSchema.safeParse({ stallTimeoutSeconds: 0 }))).toContain('stallTimeoutSeconds');
  });

  it('refuses relative roots and unknown keys', () => {
    expect(issuePaths(AgentConfigSchema.safeParse({ vmRoot: 'vms' }))).toContain('vmRoot');
    expect(AgentConfigSchema.safeParse({ vmroot: '/x' }).success).toBe(false);
    expect(issuePaths(AgentConfigSchema.safeParse({ kubeletRootDir: 'var/lib/kubelet' }))).toContain('kubeletRootDir');
    expect(issuePaths(AgentConfigSchema.safeParse({ vmSource: 'globs' }))).toContain('vmSource');
  });
});
