import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Discovery, absoluteGlobs, discoverVms, identityFromSocket } from './discovery.js';

describe('identityFromSocket', () => {
  it('takes namespace and name from the two directories above the socket', () => {
    expect(identityFromSocket('/vms', '/vms/team-a/web-1/qmp.sock')).toEqual({ ok: true, namespace: 'team-a', name: 'web-1' });
    expect(identityFromSocket('/vms/', '/vms/x/deep/team-a/web-1/qmp.sock')).toEqual({ ok: true, namespace: 'team-a', name: 'web-1' });
  });

  it.each([
    ['/vms/web-1/qmp.sock', /two directories/],
    ['/elsewhere/a/b/qmp.sock', /outside vmRoot/],
    ['/vms/../etc/a/qmp.sock', /outside vmRoot/],
    ['/vms/Team_A/web/qmp.sock', /namespace directory "Team_A" is not a DNS-1123 label/],
    ['/vms/team/web.1/qmp.sock', /VM directory "web.1"/],
    [`/vms/team/${'a'.repeat(64)}/qmp.sock`, /not a DNS-1123 label/],
  ])('refuses %s', (socket, reason) => {
    const id = identityFromSocket('/vms', socket);
    expect(id.ok).toBe(false);
    if (!id.ok) expect(id.reason).toMatch(reason);
  });
});

describe('absoluteGlobs', () => {
  it('makes globs absolute against vmRoot, a leading / included', () => {
    expect(absoluteGlobs('/var/lib/vms', ['*/*/qmp.sock', './*/*/mon.sock', '/*/*/x.sock'])).toEqual([
      '/var/lib/vms/*/*/qmp.sock',
      '/var/lib/vms/*/*/mon.sock',
      '/var/lib/vms/*/*/x.sock',
    ]);
  });
});

describe('discoverVms', () => {
  let root: string;
  const servers: net.Server[] = [];

  const socketAt = (rel: string) =>
    new Promise<void>((resolve, reject) => {
      const file = path.join(root, rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const server = net.createServer();
      server.once('error', reject);
      server.listen(file, () => resolve());
      servers.push(server);
    });

  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-discovery-'));
    await socketAt('default/demo/qmp.sock');
    await socketAt('team-b/db/qmp.sock');
    await socketAt('Bad_NS/vm/qmp.sock');
    await socketAt('default/demo/monitor.sock');
    await socketAt('default/other/monitor.sock');
    fs.mkdirSync(path.join(root, 'default/plain'), { recursive: true });
    fs.writeFileSync(path.join(root, 'default/plain/qmp.sock'), 'not a socket');
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('finds unix sockets by the default glob and names them by their directories', async () => {
    const { vms, skipped } = await discoverVms(root, ['*/*/qmp.sock']);
    expect(vms).toEqual([
      { namespace: 'default', name: 'demo', qmpSocket: path.join(root, 'default/demo/qmp.sock') },
      { namespace: 'team-b', name: 'db', qmpSocket: path.join(root, 'team-b/db/qmp.sock') },
    ]);
    expect(skipped).toEqual(
      expect.arrayContaining([
        { path: path.join(root, 'Bad_NS/vm/qmp.sock'), reason: expect.stringMatching(/not a DNS-1123 label/) },
        { path: path.join(root, 'default/plain/qmp.sock'), reason: 'it is not a unix socket' },
      ]),
    );
  });

  it('keeps the first socket of a VM when several globs match it', async () => {
    const { vms, skipped } = await discoverVms(root, ['*/*/monitor.sock', '*/*/qmp.sock']);
    expect(vms.map((v) => `${v.namespace}/${v.name}:${path.basename(v.qmpSocket)}`)).toEqual([
      'default/demo:monitor.sock',
      'default/other:monitor.sock',
      'team-b/db:qmp.sock',
    ]);
    expect(skipped.some((s) => s.reason.includes('VM default/demo already has the socket'))).toBe(true);
  });

  it('returns nothing for a missing vmRoot', async () => {
    expect(await discoverVms(path.join(root, 'missing'), ['*/*/qmp.sock'])).toEqual({ vms: [], skipped: [] });
  });

  it('logs each skipped path once across scans', async () => {
    const logged: string[] = [];
    const d = new Discovery(root, ['*/*/qmp.sock'], (p) => logged.push(p));
    await d.scan();
    await d.scan();
    expect(logged.sort()).toEqual([path.join(root, 'Bad_NS/vm/qmp.sock'), path.join(root, 'default/plain/qmp.sock')]);
    expect(await d.find('team-b', 'db')).toMatchObject({ name: 'db' });
    expect(await d.find('default', 'db')).toBeUndefined();
  });
});
