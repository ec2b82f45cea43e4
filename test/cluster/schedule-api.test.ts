// VMSnapshotSchedule on the real API server: what the CRD itself refuses (naming the field), what
// it fills in, that its template can be edited (the VMSnapshot's immutability rules do not apply to
// a template), and its columns.
import { API_VERSION } from '../../api/common.js';
import { CLUSTER_STARTUP_TIMEOUT_MS, createNamespace, kubectlOk } from '../../stack/controlplane.js';
import { apiRequest } from './api-request.js';
import { API_PREFIX, ensureCrds } from './crds.js';

type Obj = Record<string, any>;
let ns: string;
let seq = 0;

beforeAll(async () => {
  await ensureCrds();
  ns = await createNamespace('sched-api');
}, CLUSTER_STARTUP_TIMEOUT_MS);

const collection = () => `${API_PREFIX}/namespaces/${ns}/vmsnapshotschedules`;
const schedule = (spec: Obj, name = `s-${++seq}`): Obj => ({ apiVersion: API_VERSION, kind: 'VMSnapshotSchedule', metadata: { name }, spec });
const create = (obj: Obj) => apiRequest(`${collection()}?fieldValidation=Strict`, { admin: true, method: 'POST', body: obj });

function refusal(r: { status: number; body: string }): string {
  expect([400, 422]).toContain(r.status);
  return String((JSON.parse(r.body) as { message?: string }).message);
}

it.each([
  ['spec.schedule', 'three fields', { schedule: '* * *', vmNames: ['web'] }],
  ['spec.schedule', 'missing', { vmNames: ['web'] }],
  ['spec.timeZone', 'not a zone name', { schedule: '@daily', timeZone: 'Berlin time', vmNames: ['web'] }],
  ['spec', 'neither vmNames nor vmSelector', { schedule: '@daily' }],
  ['spec.vmNames[0]', 'not a DNS-1123 label', { schedule: '@daily', vmNames: ['Web_1'] }],
  ['spec.retention.keepLast', 'zero', { schedule: '@daily', vmNames: ['web'], retention: { keepLast: 0 } }],
  ['spec.retention.maxAge', 'not a duration', { schedule: '@daily', vmNames: ['web'], retention: { maxAge: '3 days' } }],
  ['spec.concurrencyPolicy', 'not an enum value', { schedule: '@daily', vmNames: ['web'], concurrencyPolicy: 'Sometimes' }],
  ['spec.template.spec.parallelism.channels', 'out of range', { schedule: '@daily', vmNames: ['web'], template: { spec: { parallelism: { channels: 65 } } } }],
  ['spec.template.spec.vmName', 'the schedule fills it in', { schedule: '@daily', vmNames: ['web'], template: { spec: { vmName: 'web' } } }],
])('refuses %s (%s), naming the field', async (field, _problem, spec) => {
  const message = refusal(await create(schedule(spec)));
  expect(message).toContain(field);
});

it('refuses a name longer than a label value (it labels the snapshots)', async () => {
  const message = refusal(await create(schedule({ schedule: '@daily', vmNames: ['web'] }, 'x'.repeat(64))));
  expect(message).toMatch(/metadata\.name.*at most 63/);
});

it('fills the documented defaults, and lets the template be edited', async () => {
  const r = await create(schedule({ schedule: '*/5 * * * * *', vmNames: ['web'], template: { spec: { captureMode: 'Live' } }, retention: { keepLast: 2 } }, 'editable'));
  expect(r.status).toBe(201);
  const stored = JSON.parse(r.body) as Obj;
  expect(stored.spec).toMatchObject({ suspend: false, concurrencyPolicy: 'Forbid', retention: { keepLast: 2, keepFailed: 1 }, template: { spec: { captureMode: 'Live', afterSnapshot: 'Resume', failureDeadline: '10m' } } });
  const patched = await apiRequest(`${collection()}/editable?fieldValidation=Strict`, {
    admin: true,
    method: 'PATCH',
    body: { spec: { template: { spec: { captureMode: 'Paused', parallelism: { channels: 2 }, className: 'fast' } }, suspend: true } },
  });
  expect(patched.status).toBe(200);
  const row = await kubectlOk(['get', 'vmsched', 'editable', '-n', ns]);
  expect(row.split('\n')[0]).toMatch(/^NAME\s+SCHEDULE\s+SUSPEND\s+ACTIVE\s+LAST\s+NEXT\s+LASTSUCCESS\s+AGE$/);
  expect(row.split('\n')[1]).toMatch(/^editable\s+\*\/5 \* \* \* \* \*\s+true\s/);
  expect(await kubectlOk(['get', 'vmsnap', '-n', ns, '-o', 'name'])).toMatch(/^vmsnapshotschedule\.vmsnap\.io\/editable$/m);
});
