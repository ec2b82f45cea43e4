// A QEMU that misbehaves: a scripted peer on a real unix socket sends what a
// broken or hostile QEMU could (garbage, huge lines, wrong ids, wrong types,
// missing fields, early closes, no greeting). The client and the engine must
// refuse each with a clear error, never crash, never leave a rejection
// unhandled, and a save must never report a broken snapshot as good.
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QmpClient } from './client.js';
import { QmpDisconnectedError, QmpError, QmpReplyError, QmpTimeoutError } from './errors.js';
import { saveVm } from '../engine/save.js';
import { queryRamBytes, queryStatus } from '../engine/qemu-info.js';
import { waitForMigration } from '../engine/migration.js';

const GREETING = JSON.stringify({ QMP: { version: { qemu: { major: 10, minor: 0, micro: 2 }, package: '' }, capabilities: [] } });

let dir: string;
const servers: net.Server[] = [];
const peers: net.Socket[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(() => process.on('unhandledRejection', onUnhandled));
afterAll(() => process.off('unhandledRejection', onUnhandled));
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-hostile-'));
});
afterEach(async () => {
  // Give stray promises a turn to surface as unhandled rejections.
  await new Promise((r) => setTimeout(r, 20));
  expect(unhandled).toEqual([]);
  for (const p of peers.splice(0)) p.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  fs.rmSync(dir, { recursive: true, force: true });
});

type Reply = (msg: { execute: string; id: unknown; arguments?: Record<string, unknown> }, s: net.Socket) => void;

/** A peer that sends `greeting` raw (null: nothing) and hands every command, qmp_capabilities included, to `reply`. */
async function peer(reply: Reply, greeting: string | null = GREETING + '\r\n'): Promise<string> {
  const sock = path.join(dir, `qmp-${servers.length}.sock`);
  const server = net.createServer((s) => {
    peers.push(s);
    s.on('error', () => undefined);
    if (greeting !== null) s.write(greeting);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      for (let i; (i = buf.indexOf('\n')) >= 0; ) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!s.destroyed) reply(JSON.parse(line), s);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(sock, r));
  return sock;
}

const send = (s: net.Socket, obj: unknown) => s.write(JSON.stringify(obj) + '\r\n');
/** Answers qmp_capabilities properly and everything else with `reply`. */
const afterHandshake =
  (reply: Reply): Reply =>
  (msg, s) =>
    msg.execute === 'qmp_capabilities' ? send(s, { return: {}, id: msg.id }) : reply(msg, s);

describe('the QMP client against a hostile peer', () => {
  const raw = (text: string) => afterHandshake((_m, s) => s.write(text));

  it.each([
    ['a line that is not JSON', raw('{"return": {}, "id": \r\n'), /QMP protocol error .*not JSON/],
    ['a JSON array', raw('[1,2,3]\r\n'), /not an object/],
    ['a JSON number', raw('42\r\n'), /not an object/],
    ['JSON nested 100000 deep', raw('['.repeat(100_000) + ']'.repeat(100_000) + '\r\n'), /QMP protocol error/],
    ['a line of 17 MiB without a newline', raw('x'.repeat(17 << 20)), /a QMP message exceeded 16777216 bytes/],
  ])('%s: the pending command fails with a protocol error and the connection is closed', async (_what, reply, message) => {
    const c = await QmpClient.connect(await peer(reply));
    const err = (await c.execute('query-status').catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(QmpError);
    expect(err.message).toMatch(message);
    expect(c.closed).toBe(true);
    await expect(c.execute('query-status')).rejects.toThrow(QmpError);
  });

  it('answers with wrong ids (another string, a number, none): not taken as ours', async () => {
    const strays = (s: net.Socket) => {
      send(s, { return: { status: 'paused', running: false }, id: 'vmsnap-999' });
      send(s, { return: { status: 'paused', running: false }, id: 2 });
      send(s, { return: { status: 'paused', running: false } });
    };
    const c = await QmpClient.connect(await peer(afterHandshake((msg, s) => (strays(s), send(s, { return: { status: 'running', running: true }, id: msg.id })))));
    await expect(c.execute('query-status')).resolves.toEqual({ status: 'running', running: true });
    c.close();
    const c2 = await QmpClient.connect(await peer(afterHandshake((_msg, s) => strays(s))));
    await expect(c2.execute('query-status', {}, { timeoutMs: 200 })).rejects.toThrow(QmpTimeoutError);
    expect(c2.closed).toBe(false);
    c2.close();
  });

  it("a reply with neither 'return' nor 'error'", async () => {
    const c = await QmpClient.connect(await peer(afterHandshake((msg, s) => send(s, { id: msg.id }))));
    await expect(c.execute('cont')).rejects.toThrow(new QmpReplyError('cont', "it has neither 'return' nor 'error'"));
    c.close();
  });

  it.each([
    ['query-status', { status: 42, running: true }, "'status' should be a string, got number 42"],
    ['query-status', { status: 'running' }, "'running' is missing"],
    ['query-status', null, 'the reply should be an object, got null ('],
    ['query-block', { device: 'virtio0' }, 'the reply should be an array, got object'],
    ['query-block', [{ device: 'virtio0', inserted: { ro: 'no', drv: 'qcow2' } }], "'[0].inserted.ro' should be a boolean, got string"],
    ['query-migrate', { status: 'active', ram: { transferred: 'lots', total: 1, remaining: 0 } }, "'ram.transferred' should be a number, got string \"lots\""],
    ['query-migrate', { status: ['completed'] }, "'status' should be a string, got array [\"completed\"]"],
    ['query-migrate', 'completed', 'the reply should be an object, got string'],
    ['query-memory-size-summary', { 'base-memory': '33554432' }, "'base-memory' should be a number, got string"],
    ['query-migrate-capabilities', [{ capability: 'mapped-ram', state: 'yes' }], "'[0].state' should be a boolean"],
    ['add-fd', { 'fdset-id': null, fd: 3 }, "'fdset-id' should be a number, got null"],
  ])('%s answered with %j: refused, naming the field', async (command, value, problem) => {
    const c = await QmpClient.connect(await peer(afterHandshake((msg, s) => send(s, { return: value, id: msg.id }))));
    const err = await c.execute(command).catch((e: unknown) => e);
    const closed = c.closed; // one bad answer does not end the connection
    c.close();
    expect(closed).toBe(false);
    expect(err).toBeInstanceOf(QmpReplyError);
    expect((err as Error).message).toContain(`unexpected reply to '${command}': ${problem}`);
  });

  it('the engine reports a bad reply as such, not as a TypeError', async () => {
    const c = await QmpClient.connect(
      await peer(afterHandshake((msg, s) => send(s, { return: msg.execute === 'query-status' ? { running: 'yes' } : {}, id: msg.id }))),
    );
    await expect(queryStatus(c)).rejects.toThrow(/unexpected reply to 'query-status': 'status' is missing/);
    await expect(queryRamBytes(c)).rejects.toThrow(/'base-memory' is missing/);
    c.close();
  });

  it('events with odd payloads do not disturb a wait; a close ends it', async () => {
    let polls = 0;
    const c = await QmpClient.connect(
      await peer(
        afterHandshake((msg, s) => {
          s.write('{"event": "MIGRATION", "data": "not an object"}\r\n{"event": 42}\r\n{"event": "MIGRATION", "data": null, "timestamp": "x"}\r\n');
          if (++polls === 3) s.destroy();
          else send(s, { return: { status: 'active' }, id: msg.id });
        }),
      ),
    );
    const err = await waitForMigration(c, { pollMs: 5, startedAt: Date.now() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpDisconnectedError);
    expect((err as Error).message).toMatch(/while waiting for the answer to 'query-migrate'/);
  });

  it('closes right after the greeting: connect fails clearly', async () => {
    const sock = await peer((_m, s) => s.destroy());
    await expect(QmpClient.connect(sock)).rejects.toThrow(/QEMU closed its QMP socket .* while waiting for the answer to 'qmp_capabilities'/);
  });

  it('greets without QMP: a JSON object that is not a greeting, and a text banner', async () => {
    const noQmp = await peer(() => undefined, '{"hello": "world"}\r\n');
    await expect(QmpClient.connect(noQmp, { timeoutMs: 200 })).rejects.toThrow(/sent no greeting within 200 ms/);
    const banner = await peer(() => undefined, 'SSH-2.0-OpenSSH_9.2\r\n');
    await expect(QmpClient.connect(banner, { timeoutMs: 2000 })).rejects.toThrow(/QMP protocol error .*not JSON: SSH-2.0/);
  });

  it('a greeting with nonsense in it: no crash, the version is read as far as it goes', async () => {
    const sock = await peer(afterHandshake(() => undefined), JSON.stringify({ QMP: { version: 'ten', capabilities: 'all' } }) + '\r\n');
    const c = await QmpClient.connect(sock);
    expect(c.capabilities).toEqual([]);
    expect(c.version.major).toBe(0);
    c.close();
  });

  it('never answers a command: a timeout naming the command', async () => {
    const c = await QmpClient.connect(await peer(afterHandshake(() => undefined)));
    await expect(c.execute('query-migrate', {}, { timeoutMs: 100 })).rejects.toThrow(/did not answer 'query-migrate' within 100 ms/);
    c.close();
  });
});

/**
 * A QEMU that plays along with a save (stateful run state, fdsets) but lies
 * where `lie` says: the save must fail with the reason, resume the VM and
 * leave no file, because QEMU never wrote a real stream.
 */
async function lyingQemu(lie: (msg: { execute: string; id: unknown }, s: net.Socket) => boolean) {
  const received: string[] = [];
  let running = true;
  let migrated = false;
  const sock = await peer(
    afterHandshake((msg, s) => {
      received.push(msg.execute);
      if (lie(msg, s)) return;
      const answers: Record<string, unknown> = {
        'query-status': { status: running ? 'running' : 'paused', running },
        'qom-get': 'pc-q35-10.0-machine',
        'query-memory-size-summary': { 'base-memory': 32 << 20 },
        'query-machines': [{ name: 'pc-q35-10.0', 'default-ram-id': 'pc.ram' }],
        'query-migrate': migrated ? { status: 'completed', ram: { transferred: 32 << 20, total: 32 << 20, remaining: 0 } } : {},
        'query-migrate-capabilities': ['mapped-ram', 'multifd', 'events'].map((capability) => ({ capability, state: false })),
        'query-migrate-parameters': { 'multifd-channels': 2, 'direct-io': false, 'max-bandwidth': 134217728 },
        'add-fd': { 'fdset-id': 7, fd: 40 },
        'query-block': [],
      };
      if (msg.execute === 'stop') running = false;
      if (msg.execute === 'cont') running = true;
      if (msg.execute === 'migrate') migrated = true;
      send(s, { return: answers[msg.execute] ?? {}, id: msg.id });
    }),
  );
  return { sock, received, isRunning: () => running };
}

describe('a save against a QEMU that lies', () => {
  const save = (sock: string, out: string) => saveVm({ qmpSocket: sock, outPath: out, channels: 2, directIO: 'off', after: 'resume', live: false, pollMs: 5 });

  it('claims the save completed but wrote nothing: refused, the VM resumed, no file', async () => {
    const q = await lyingQemu(() => false);
    const out = path.join(dir, 'empty.vms');
    await expect(save(q.sock, out)).rejects.toThrow(/has no QEMU migration stream at offset 1048576 \(missing QEVM magic\)/);
    expect(q.received).toContain('migrate');
    expect(q.isRunning()).toBe(true);
    expect(q.received.at(-1)).toBe('cont');
    expect(fs.existsSync(out)).toBe(false);
  });

  it('reports progress in strings: refused naming the field, the VM resumed, no file', async () => {
    const q = await lyingQemu((msg, s) => {
      if (msg.execute !== 'query-migrate' || !q.received.includes('migrate')) return false;
      send(s, { return: { status: 'active', ram: { transferred: '1', total: '2', remaining: '1' } }, id: msg.id });
      return true;
    });
    const out = path.join(dir, 'strings.vms');
    await expect(save(q.sock, out)).rejects.toThrow(/unexpected reply to 'query-migrate': 'ram.transferred' should be a number/);
    expect(q.isRunning()).toBe(true);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('hangs up in the middle of the save: a clear error, no file', async () => {
    const q = await lyingQemu((msg, s) => {
      if (msg.execute !== 'migrate') return false;
      s.destroy();
      return true;
    });
    const out = path.join(dir, 'hangup.vms');
    await expect(save(q.sock, out)).rejects.toThrow(/QEMU closed its QMP socket .* while waiting for the answer to 'migrate'/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('says its status is a number: refused before any file is created', async () => {
    const q = await lyingQemu((msg, s) => {
      if (msg.execute !== 'query-status') return false;
      send(s, { return: { status: 3, running: true }, id: msg.id });
      return true;
    });
    const out = path.join(dir, 'status.vms');
    await expect(save(q.sock, out)).rejects.toThrow(/unexpected reply to 'query-status': 'status' should be a string, got number 3/);
    expect(q.received).not.toContain('migrate');
    expect(fs.existsSync(out)).toBe(false);
  });
});
