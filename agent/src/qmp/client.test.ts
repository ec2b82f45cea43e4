// The QMP client against a scripted peer: protocol edge cases that a real
// QEMU rarely shows (the engine tests cover the real one).
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QmpClient } from './client.js';
import { QmpCommandError, QmpDisconnectedError, QmpTimeoutError } from './errors.js';
import { configureMigration, MappedRamUnsupportedError, resumeAfterMigration } from '../engine/migration.js';

type Handler = (msg: Record<string, unknown>, socket: net.Socket) => void;

const GREETING = JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'Debian' }, capabilities: ['oob'] } });

let dir: string;
let server: net.Server | undefined;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-test-'));
});
afterEach(async () => {
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A QMP peer that greets (unless told not to) and hands each command to `handler`. */
async function fakeQemu(handler: Handler, opts: { greeting?: string | null } = {}): Promise<string> {
  const sock = path.join(dir, 'qmp.sock');
  server = net.createServer((s) => {
    if (opts.greeting !== null) s.write((opts.greeting ?? GREETING) + '\r\n');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (msg.execute === 'qmp_capabilities') s.write(JSON.stringify({ return: {}, id: msg.id }) + '\r\n');
        else handler(msg, s);
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server!.listen(sock, r));
  return sock;
}

const reply = (s: net.Socket, id: unknown, value: unknown) => s.write(JSON.stringify({ return: value, id }) + '\r\n');

describe('QmpClient', () => {
  it('negotiates capabilities and reports the QEMU version', async () => {
    const sock = await fakeQemu(() => undefined);
    const c = await QmpClient.connect(sock);
    expect(c.version).toMatchObject({ major: 7, minor: 2, micro: 0 });
    expect(c.capabilities).toEqual(['oob']);
    c.close();
  });

  it('matches answers to commands by id, even out of order, and delivers events', async () => {
    const held: Array<[unknown, net.Socket]> = [];
    const sock = await fakeQemu((msg, s) => {
      held.push([msg.id, s]);
      if (held.length === 2) {
        s.write(JSON.stringify({ event: 'STOP', data: {}, timestamp: { seconds: 1, microseconds: 2 } }) + '\r\n');
        reply(s, held[1]![0], 'second');
        reply(s, held[0]![0], 'first');
      }
    });
    const c = await QmpClient.connect(sock);
    const events: string[] = [];
    c.on('event', (e) => events.push(e.event));
    const [a, b] = await Promise.all([c.execute('one'), c.execute('two')]);
    expect([a, b]).toEqual(['first', 'second']);
    expect(events).toEqual(['STOP']);
    c.close();
  });

  it('turns a QMP error into a message naming the command', async () => {
    const sock = await fakeQemu((msg, s) =>
      s.write(JSON.stringify({ error: { class: 'GenericError', desc: 'Migration is disabled' }, id: msg.id }) + '\r\n'),
    );
    const c = await QmpClient.connect(sock);
    await expect(c.execute('migrate', { uri: 'file:/x' })).rejects.toThrow(new QmpCommandError('migrate', 'GenericError', 'Migration is disabled'));
    await expect(c.execute('migrate')).rejects.toThrow("QEMU refused 'migrate': Migration is disabled");
    c.close();
  });

  it('times out a command QEMU never answers', async () => {
    const sock = await fakeQemu(() => undefined);
    const c = await QmpClient.connect(sock);
    await expect(c.execute('query-status', {}, { timeoutMs: 100 })).rejects.toThrow(QmpTimeoutError);
    c.close();
  });

  it('fails pending commands cleanly when QEMU goes away mid-command', async () => {
    const sock = await fakeQemu((_msg, s) => s.destroy());
    const c = await QmpClient.connect(sock);
    const err = (await c.execute('migrate').catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(QmpDisconnectedError);
    expect(err.message).toMatch(/QEMU closed its QMP socket .* while waiting for the answer to 'migrate'/);
    await expect(c.execute('query-status')).rejects.toThrow(QmpDisconnectedError);
  });

  it('survives a peer that sends garbage: a clear protocol error, no crash', async () => {
    const sock = await fakeQemu((_msg, s) => s.write('this is not json\r\n'));
    const c = await QmpClient.connect(sock);
    await expect(c.execute('query-status')).rejects.toThrow(/not JSON/);
  });

  it('ignores answers that belong to no command and keeps working', async () => {
    const sock = await fakeQemu((msg, s) => {
      s.write(JSON.stringify({ return: 'stray', id: 'someone-else' }) + '\r\n');
      s.write(JSON.stringify([1, 2, 3]).slice(0, 0));
      reply(s, msg.id, 'mine');
    });
    const c = await QmpClient.connect(sock);
    await expect(c.execute('x')).resolves.toBe('mine');
    c.close();
  });

  it('explains a monitor that accepts the connection but never greets', async () => {
    const sock = await fakeQemu(() => undefined, { greeting: null });
    await expect(QmpClient.connect(sock, { timeoutMs: 200 })).rejects.toThrow(/sent no greeting .* one client at a time/);
  });

  it('explains a missing socket and a stale one', async () => {
    await expect(QmpClient.connect(path.join(dir, 'nope.sock'))).rejects.toThrow(/no QMP socket at .*nope\.sock/);
    // A listener killed with SIGKILL leaves its socket file behind.
    const stale = path.join(dir, 'stale.sock');
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(fs.existsSync(stale)).toBe(true);
    await expect(QmpClient.connect(stale)).rejects.toThrow(/nothing listens on the QMP socket .* stale socket file/);
    // The errno code travels with the error: callers decide on it, not on the text.
    await expect(QmpClient.connect(stale)).rejects.toMatchObject({ name: 'QmpConnectError', code: 'ECONNREFUSED', nobodyListens: true });
    await expect(QmpClient.connect(path.join(dir, 'nope.sock'))).rejects.toMatchObject({ code: 'ENOENT', absent: true, nobodyListens: false });
  });

  it("waits for a full listen backlog to drain (QEMU's is one) instead of failing with EAGAIN", async () => {
    // A peer whose backlog is full: it listens with a backlog of zero, fills it with a connection of
    // its own and accepts nothing for `holdMs`; then it greets every client as QEMU does.
    const sock = path.join(dir, 'busy.sock');
    const holdMs = 600;
    const peer = spawn('python3', ['-c', `
import socket, sys, time, json
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(0)
filler = socket.socket(socket.AF_UNIX); filler.connect(sys.argv[1])
print("ready", flush=True); time.sleep(${holdMs / 1000})
s.accept()[0].close()
c, _ = s.accept()
c.sendall(b${JSON.stringify(GREETING + '\r\n')})
f = c.makefile("rb")
for line in f:
    m = json.loads(line); c.sendall((json.dumps({"return": {}, "id": m.get("id")}) + "\\r\\n").encode())
`, sock]);
    try {
      await new Promise((r) => peer.stdout.once('data', r));
      // Without waiting, the connect fails at once.
      await expect(QmpClient.connect(sock, { timeoutMs: 10 })).rejects.toMatchObject({ name: 'QmpConnectError', code: 'EAGAIN' });
      const started = Date.now();
      const c = await QmpClient.connect(sock, { timeoutMs: 5000 });
      expect(Date.now() - started).toBeGreaterThanOrEqual(holdMs / 2);
      expect(c.version).toMatchObject({ major: 7, minor: 2 });
      c.close();
    } finally {
      peer.kill('SIGKILL');
    }
  });

  it('refuses a QEMU without mapped-ram with the version it needs', async () => {
    const sock = await fakeQemu((msg, s) => {
      if (msg.execute === 'query-migrate-capabilities') reply(s, msg.id, [{ capability: 'xbzrle', state: false }, { capability: 'multifd', state: false }]);
      else reply(s, msg.id, {});
    });
    const c = await QmpClient.connect(sock);
    await expect(configureMigration(c, { channels: 4, directIO: true, unlimitedBandwidth: true })).rejects.toThrow(
      new MappedRamUnsupportedError('QEMU 7.2.0 has no mapped-ram migration capability: vmsnap needs QEMU >= 9.1'),
    );
    c.close();
  });

  it('a live save on a KVM without a dirty ring: QEMU refuses dirty-limit, the save goes on with auto-converge and says why', async () => {
    const refusal = "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set";
    const capsSet: Array<Record<string, boolean>> = [];
    const sock = await fakeQemu((msg, s) => {
      const args = msg.arguments as Record<string, unknown> | undefined;
      if (msg.execute === 'query-migrate-capabilities') {
        reply(s, msg.id, ['mapped-ram', 'multifd', 'events', 'auto-converge', 'dirty-limit'].map((capability) => ({ capability, state: false })));
      } else if (msg.execute === 'query-migrate-parameters') {
        reply(s, msg.id, { 'downtime-limit': 300, 'max-bandwidth': 134217728, 'cpu-throttle-initial': 20 });
      } else if (msg.execute === 'query-kvm') {
        reply(s, msg.id, { enabled: true, present: true });
      } else if (msg.execute === 'migrate-set-capabilities') {
        const caps = Object.fromEntries((args!.capabilities as Array<{ capability: string; state: boolean }>).map((c) => [c.capability, c.state]));
        capsSet.push(caps);
        if (caps['dirty-limit']) s.write(JSON.stringify({ error: { class: 'GenericError', desc: refusal }, id: msg.id }) + '\r\n');
        else reply(s, msg.id, {});
      } else {
        reply(s, msg.id, {});
      }
    });
    const c = await QmpClient.connect(sock);
    const configured = await configureMigration(c, { channels: 2, directIO: false, unlimitedBandwidth: true, live: true });
    c.close();
    // Only what changes is sent: dirty-limit first, then auto-converge instead.
    expect(capsSet.map((caps) => [caps['dirty-limit'], caps['auto-converge']])).toEqual([
      [true, undefined],
      [undefined, true],
    ]);
    expect(configured.live).toMatchObject({ convergence: 'AutoConverge' });
    expect(configured.live!.reason).toContain(refusal);
    // What is put back afterwards: the capability and the parameters as they were.
    expect(configured.capabilities).toContainEqual({ capability: 'auto-converge', state: false });
    expect(configured.parameters).toMatchObject({ 'downtime-limit': 300, 'cpu-throttle-initial': 20 });
  });

  it("resumes a VM whose save just completed once QEMU has left 'finish-migrate' (it refuses cont until then)", async () => {
    let state = 'finish-migrate';
    let refused = 0;
    const sock = await fakeQemu((msg, s) => {
      if (msg.execute === 'cont' && state === 'finish-migrate') {
        refused++;
        if (refused === 2) state = 'postmigrate';
        s.write(JSON.stringify({ error: { class: 'GenericError', desc: 'Migration is not finalized yet' }, id: msg.id }) + '\r\n');
      } else if (msg.execute === 'cont') {
        state = 'running';
        reply(s, msg.id, {});
      } else if (msg.execute === 'query-status') {
        reply(s, msg.id, { status: state, running: state === 'running' });
      }
    });
    const c = await QmpClient.connect(sock);
    await resumeAfterMigration(c);
    expect([refused, state]).toEqual([2, 'running']);
    c.close();
  });

  it('passes on any other refusal of cont', async () => {
    const sock = await fakeQemu((msg, s) => {
      if (msg.execute === 'cont') s.write(JSON.stringify({ error: { class: 'GenericError', desc: 'Resetting the Virtual Machine is required' }, id: msg.id }) + '\r\n');
      else reply(s, msg.id, { status: 'internal-error', running: false });
    });
    const c = await QmpClient.connect(sock);
    await expect(resumeAfterMigration(c)).rejects.toThrow(/Resetting the Virtual Machine is required/);
    c.close();
  });
});
