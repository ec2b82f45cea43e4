import { VMRestoreSchema, VMSnapshotSchema } from '../api/index.js';
import { UsageError, parseInvocation, type Invocation } from './args.js';
import { lsTable } from './main.js';
import { progressLine } from './progress.js';
import { build, defaultName } from './resources.js';

const NOW = new Date('2026-12-07T18:30:05.123Z');
const inv = (...argv: string[]) => parseInvocation(argv) as Invocation;
const refused = (...argv: string[]) => {
  try {
    parseInvocation(argv);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
};

describe('argument parsing', () => {
  it('reads commands, targets and options', () => {
    expect(inv('save', 'demo', '-n', 'prod', '--live', '--channels', '8', '--wait', '--timeout', '5m')).toMatchObject({
      command: 'save',
      target: 'demo',
      namespace: 'prod',
      live: true,
      channels: 8,
      wait: true,
      timeoutMs: 300_000,
    });
    expect(inv('restore', 'demo-snap', '--as', 'copy', '--lazy')).toMatchObject({ command: 'restore', target: 'demo-snap', as: 'copy', lazy: true });
    expect(inv('save', 'demo', '--dry-run', '-o', 'yaml')).toMatchObject({ dryRun: true, output: 'yaml' });
    expect(inv('save', 'demo', '--dry-run=client')).toMatchObject({ dryRun: true });
    expect(inv('ls', '-A')).toMatchObject({ command: 'ls', target: undefined, allNamespaces: true });
    expect(inv('restore', 'demo-snap', '--failure-deadline', '30s')).toMatchObject({ failureDeadline: '30s' });
    expect(parseInvocation([])).toBe('help');
    expect(parseInvocation(['save', '--help'])).toBe('help');
  });

  it('refuses bad input with a message naming the argument', () => {
    expect(refused('snap', 'demo')).toMatch(/^unknown command "snap": use one of ls, save, hibernate, wake, restore/);
    expect(refused('save')).toMatch(/"save" needs a VM argument/);
    expect(refused('save', 'Demo_1')).toMatch(/^VM "Demo_1": .*DNS-1123 label/);
    expect(refused('restore', 'a', 'b')).toMatch(/"restore" takes one SNAPSHOT, got 2 arguments/);
    expect(refused('save', 'demo', '--channels', '65')).toMatch(/^--channels "65": must be a whole number from 1 to 64/);
    expect(refused('save', 'demo', '--channels', 'four')).toMatch(/^--channels "four"/);
    expect(refused('save', 'demo', '--as', 'x')).toMatch(/^option --as does not apply to "save"/);
    expect(refused('restore', 's', '--live')).toMatch(/^option --live does not apply to "restore"/);
    expect(refused('save', 'demo', '--bogus')).toMatch(/^unknown option --bogus/);
    expect(refused('save', 'demo', '-o', 'wide')).toMatch(/^--output "wide": use one of yaml, json, name/);
    expect(refused('save', 'demo', '--timeout', '5m')).toMatch(/--timeout only applies with --wait/);
    expect(refused('save', 'demo', '--wait', '--timeout', 'soon')).toMatch(/^--timeout "soon": must be a Go duration/);
    expect(refused('save', 'demo', '--wait', '--dry-run')).toMatch(/exclude each other/);
    expect(refused('save', 'demo', '--dry-run=server')).toMatch(/^--dry-run "server"/);
    expect(refused('save', 'demo', '-n', 'Bad NS')).toMatch(/^--namespace "Bad NS"/);
    expect(refused('restore', 'snap', '--as', 'UPPER')).toMatch(/^--as "UPPER"/);
    expect(refused('ls', '-A', '-n', 'x')).toMatch(/exclude each other/);
    expect(refused('save', 'demo', '--failure-deadline', 'soon')).toMatch(/^--failure-deadline "soon": must be a Go duration/);
    expect(refused('ls', '--failure-deadline', '5s')).toMatch(/^option --failure-deadline does not apply to "ls"/);
  });
});

describe('resource builders', () => {
  it('save: a VMSnapshot of the VM, named <vm>-<UTC time>, valid for the API', () => {
    const b = build(inv('save', 'demo', '--live', '--class', 'fast', '--channels', '8'), 'prod', NOW);
    expect(b).toEqual({
      resource: 'vmSnapshot',
      object: {
        apiVersion: 'vmsnap.io/v1alpha1',
        kind: 'VMSnapshot',
        metadata: { name: 'demo-20261207-183005', namespace: 'prod' },
        spec: { vmName: 'demo', className: 'fast', parallelism: { channels: 8 }, captureMode: 'Live' },
      },
    });
    expect(VMSnapshotSchema.safeParse(b.object).success).toBe(true);
  });

  it('--failure-deadline sets spec.failureDeadline of the snapshot or restore it creates', () => {
    expect(build(inv('save', 'demo', '--failure-deadline', '5s'), 'prod', NOW).object.spec).toMatchObject({ failureDeadline: '5s' });
    expect(build(inv('wake', 'demo', '--failure-deadline', '1m'), 'prod', NOW).object.spec).toMatchObject({ failureDeadline: '1m' });
  });

  it('hibernate: afterSnapshot Stop', () => {
    expect(build(inv('hibernate', 'demo', '--name', 'nap'), 'default', NOW).object).toMatchObject({ metadata: { name: 'nap' }, spec: { vmName: 'demo', afterSnapshot: 'Stop' } });
  });

  it('wake: a VMRestore of the VM\'s newest Succeeded snapshot', () => {
    const b = build(inv('wake', 'demo', '--lazy'), 'default', NOW);
    expect(b).toMatchObject({ resource: 'vmRestore', object: { kind: 'VMRestore', metadata: { name: 'demo-wake-20261207-183005' }, spec: { latestSnapshotOf: 'demo', restoreMode: 'Lazy' } } });
    expect(VMRestoreSchema.safeParse(b.object).success).toBe(true);
  });

  it('restore: into the snapshot\'s VM, or a copy with --as; --replace restores over a running VM', () => {
    expect(build(inv('restore', 'demo-snap'), 'default', NOW).object).toEqual({
      apiVersion: 'vmsnap.io/v1alpha1',
      kind: 'VMRestore',
      metadata: { name: 'demo-snap-restore-20261207-183005', namespace: 'default' },
      spec: { snapshotName: 'demo-snap' },
    });
    expect(build(inv('restore', 'demo-snap', '--as', 'copy', '--replace'), 'default', NOW).object).toMatchObject({
      metadata: { name: 'copy-from-demo-snap-20261207-183005' },
      spec: { snapshotName: 'demo-snap', targetVMName: 'copy', ifRunning: 'Replace' },
    });
  });

  it('refuses what the API would refuse, naming the field', () => {
    expect(() => build(inv('restore', 's', '--lazy', '--name', 'x'), 'default', NOW)).not.toThrow();
    expect(() => build({ ...inv('save', 'demo'), channels: 99 }, 'default', NOW)).toThrow(/spec\.parallelism\.channels/);
  });

  it('default names stay DNS-1123 subdomains of at most 253 characters', () => {
    const name = defaultName('a'.repeat(252), NOW);
    expect(name.length).toBeLessThanOrEqual(253);
    expect(name).toMatch(/^a+-20261207-183005$/);
  });
});

describe('output', () => {
  it('draws a progress bar from status bytes, and the phase before bytes flow', () => {
    expect(progressLine({ phase: 'InProgress', progress: { bytesDone: 128 << 20, bytesTotal: 512 << 20 } })).toBe(`[${'#'.repeat(8)}${'.'.repeat(22)}]  25%  128Mi/512Mi  InProgress`);
    expect(progressLine({ phase: 'Succeeded', progress: { bytesDone: 500 << 20, bytesTotal: 512 << 20 } })).toMatch(/^\[#{30}\] 100%/);
    expect(progressLine({ phase: 'Pending', conditions: [{ type: 'Ready', reason: 'WaitingForVM' }] })).toBe('Pending: WaitingForVM');
    expect(progressLine(undefined)).toBe('Pending');
  });

  it('ls: one table of snapshots and restores, filtered by VM', () => {
    const now = NOW.getTime();
    const snap = { metadata: { name: 'demo-1', namespace: 'ns', creationTimestamp: new Date(now - 90_000).toISOString() }, spec: { vmName: 'demo' }, status: { phase: 'Succeeded', restoreSizeHuman: '256Mi', durationHuman: '1.2s' } };
    const other = { metadata: { name: 'db-1', namespace: 'ns', creationTimestamp: new Date(now - 80_000).toISOString() }, spec: { vmName: 'db' }, status: { phase: 'InProgress', progress: { bytesDone: 1, bytesTotal: 4 } } };
    const rest = { metadata: { name: 'r-1', namespace: 'ns', creationTimestamp: new Date(now - 10_000).toISOString() }, spec: { snapshotName: 'demo-1' }, status: { phase: 'Succeeded', effective: { targetVMName: 'demo' } } };
    const all = lsTable([snap, other] as never, [rest] as never, { allNamespaces: false, now });
    expect(all.split('\n')[0]).toMatch(/^KIND\s+NAME\s+VM\s+FROM\s+PHASE\s+PROGRESS\s+SIZE\s+DURATION\s+AGE$/);
    expect(all).toMatch(/^snapshot\s+demo-1\s+demo\s+Succeeded\s+256Mi\s+1\.2s\s+90s$/m);
    expect(all).toMatch(/^snapshot\s+db-1\s+db\s+InProgress\s+25%\s+80s$/m);
    expect(all).toMatch(/^restore\s+r-1\s+demo\s+demo-1\s+Succeeded\s+10s$/m);
    const demo = lsTable([snap, other] as never, [rest] as never, { vm: 'demo', allNamespaces: true, now });
    expect(demo).not.toMatch(/db-1/);
    expect(demo.split('\n')[0]).toMatch(/^NAMESPACE\s+KIND/);
  });
});
