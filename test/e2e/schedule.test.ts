// VMSnapshotSchedule end to end: real API server, the chart's RBAC, the operator and an agent as
// processes, a real QEMU guest. A schedule fires every 5 seconds, its VMSnapshots of the VM succeed
// for real, retention deletes the oldest (their files go with them), a restarted operator never
// takes a run twice, and suspend stops new runs.
import fs from 'node:fs';
import path from 'node:path';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { createNamespace, kubectlOk } from '../../stack/controlplane.js';
import { startGuest, type Guest } from '../../kit/guest.js';
import { poll, sleep } from '../../kit/poll.js';
import { vmSnapshotSchedule } from '../../kit/manifests.js';
import { apply, getJson, waitFor } from './objects.js';
import { startStack, tearDownStack, type Stack } from '../../stack/e2e.js';

let stack: Stack;
const guests: Guest[] = [];

beforeAll(async () => {
  stack = await startStack(['node-a']);
}, 30 * 60 * 1000);

afterAll(() => tearDownStack(stack, guests));

interface Snap {
  metadata: { name: string; uid: string; deletionTimestamp?: string; labels: Record<string, string>; annotations: Record<string, string>; ownerReferences: Array<{ kind: string; name: string; uid: string }> };
  spec: { vmName: string; parallelism?: { channels: number } };
  status?: { phase?: string; file?: { path: string } };
}

async function snapshotsOf(ns: string, schedule: string): Promise<Snap[]> {
  return (JSON.parse(await kubectlOk(['get', 'vmsnapshots.vmsnap.io', '-n', ns, '-l', `vmsnap.io/schedule=${schedule}`, '-o', 'json'])) as { items: Snap[] }).items;
}

/** Polls the schedule's snapshots until `accept` says yes. */
async function until(ns: string, schedule: string, what: string, accept: (s: Snap[]) => boolean, timeoutMs = 240_000): Promise<Snap[]> {
  let list: Snap[] = [];
  return poll(what, async () => {
    list = await snapshotsOf(ns, schedule);
    return accept(list) && list;
  }, { timeoutMs, intervalMs: 500, describe: () => `snapshots: ${list.map((s) => `${s.metadata.name}=${s.status?.phase}`).join(', ')}` });
}

it('fires every 5 seconds, snapshots a real VM, keeps the last 2 and deletes the oldest with its file', async () => {
  const ns = await createNamespace('e2e-sched');
  const dir = path.join(stack.agents.get('node-a')!.vmRoot, ns, 'web');
  const guest = await startGuest({ dir, name: 'web', memMiB: 128, fillMiB: 32, seed: 9 });
  guests.push(guest);
  await guest.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);

  await apply(
    vmSnapshotSchedule('every5', {
      schedule: '*/5 * * * * *',
      vmNames: ['web'],
      template: { metadata: { labels: { purpose: 'e2e' } }, spec: { parallelism: { channels: 2 } } },
      retention: { keepLast: 2 },
      concurrencyPolicy: 'Forbid',
    }),
    ns,
  );
  const sched = await getJson('vmsnapshotschedule/every5', ns);

  // Three Succeeded runs have existed; by then retention has deleted the first.
  const seen = new Map<string, Snap>();
  await until(ns, 'every5', 'a third Succeeded snapshot', (list) => {
    for (const s of list) if (s.status?.phase === 'Succeeded') seen.set(s.metadata.name, s);
    return seen.size >= 3;
  });
  const ordered = [...seen.values()].sort((a, b) => a.metadata.annotations['vmsnap.io/scheduled-time']!.localeCompare(b.metadata.annotations['vmsnap.io/scheduled-time']!));
  const [first, second] = ordered;
  // The newest is kept: its file is a complete snapshot made with the template's channels.
  expect(readHeader(ordered.at(-1)!.status!.file!.path).metadata.stream).toMatchObject({ channels: 2 });
  for (const s of seen.values()) {
    // Named by schedule, VM and the run's time (a multiple of 5 s), owned and labelled by the schedule.
    const time = Date.parse(s.metadata.annotations['vmsnap.io/scheduled-time']!);
    expect(time % 5000).toBe(0);
    expect(s.metadata.name).toBe(`every5-web-${time / 1000}`);
    expect(s.metadata.labels).toMatchObject({ 'vmsnap.io/schedule': 'every5', 'vmsnap.io/vm': 'web', purpose: 'e2e' });
    expect(s.metadata.ownerReferences).toEqual([expect.objectContaining({ kind: 'VMSnapshotSchedule', name: 'every5', uid: sched.metadata.uid })]);
    expect(s.spec).toMatchObject({ vmName: 'web', parallelism: { channels: 2 } });
  }
  const firstFile = first!.status!.file!.path;
  await until(ns, 'every5', 'retention deleting the oldest', (list) => !list.some((s) => s.metadata.name === first!.metadata.name));
  // Deleted through the normal path: the finalizer waited for the agent to remove the file.
  expect(fs.existsSync(firstFile)).toBe(false);
  // Never more than keepLast Succeeded once retention has caught up with a run.
  await until(ns, 'every5', 'the second deleted too', (list) => !list.some((s) => s.metadata.name === second!.metadata.name));
  const settled = await snapshotsOf(ns, 'every5');
  expect(settled.filter((s) => s.status?.phase === 'Succeeded' && !s.metadata.deletionTimestamp).length).toBeLessThanOrEqual(3); // 2 kept + at most one just finished

  const status = (await getJson('vmsnapshotschedule/every5', ns)).status;
  expect(status.conditions).toEqual([expect.objectContaining({ type: 'Ready', status: 'True', reason: 'Scheduled' })]);
  expect(Date.parse(status.nextScheduleTime)).toBeGreaterThan(Date.parse(status.lastScheduleTime));
  expect(status.lastSuccessfulSnapshot).toMatch(/^every5-web-\d+$/);
  const row = await kubectlOk(['get', 'vmsched', 'every5', '-n', ns, '--no-headers']);
  expect(row).toMatch(/^every5\s+\*\/5 \* \* \* \* \*\s+false\s+\d+\s/);
  const events = await kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=every5', '-o', 'jsonpath={.items[*].reason}']);
  expect(events).toMatch(/SnapshotsCreated/);
  expect(events).toMatch(/RetentionDeleted/);

  // A restarted operator resumes from status.lastScheduleTime and never takes a run twice:
  // every snapshot is for a distinct scheduled time.
  await stack.killOperator('SIGKILL');
  stack.restartOperator();
  const before = Date.parse((await getJson('vmsnapshotschedule/every5', ns)).status.lastScheduleTime);
  await waitFor('vmsnapshotschedule/every5', ns, '{.status.lastScheduleTime}', (t) => Date.parse(t) > before, 120_000);
  const after = await snapshotsOf(ns, 'every5');
  const times = after.map((s) => s.metadata.annotations['vmsnap.io/scheduled-time']);
  expect(new Set(times).size).toBe(times.length);

  // Suspended: no new runs; the Ready reason says so and there is no next run.
  await kubectlOk(['patch', 'vmsnapshotschedule', 'every5', '-n', ns, '--type=merge', '-p', '{"spec":{"suspend":true}}']);
  await waitFor('vmsnapshotschedule/every5', ns, '{.status.conditions[0].reason}', (r) => r === 'Suspended', 60_000);
  const suspendedAt = Date.now();
  const names = new Set((await snapshotsOf(ns, 'every5')).map((s) => s.metadata.name));
  expect((await getJson('vmsnapshotschedule/every5', ns)).status.nextScheduleTime).toBeUndefined();
  await sleep(12_000); // two periods
  const later = (await snapshotsOf(ns, 'every5')).filter((s) => !names.has(s.metadata.name));
  expect(later.filter((s) => Date.parse(s.metadata.annotations['vmsnap.io/scheduled-time']!) > suspendedAt)).toEqual([]);
});

it('a VMSnapshot the API server refuses (a bad template label) is a Warning event, and the schedule moves on', async () => {
  const ns = await createNamespace('e2e-sched-bad');
  await apply(vmSnapshotSchedule('badlabel', { schedule: '*/5 * * * * *', vmNames: ['web'], template: { metadata: { labels: { team: 'not a label value!' } } } }), ns);
  const first = await waitFor('vmsnapshotschedule/badlabel', ns, '{.status.lastScheduleTime}', (t) => t !== '', 60_000);
  await waitFor('vmsnapshotschedule/badlabel', ns, '{.status.lastScheduleTime}', (t) => t !== '' && t !== first, 60_000);
  const events = await kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=badlabel,reason=CreateRefused', '-o', 'jsonpath={.items[*].message}']);
  expect(events).toMatch(/the API server refused VMSnapshot badlabel-web-\d+: .*metadata\.labels/);
  expect(await snapshotsOf(ns, 'badlabel')).toEqual([]);
});
