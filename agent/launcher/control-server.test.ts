// The control socket against a real unix socket, with a stub behind it: framing, ordering and
// hostile lines. The QEMU side is covered by test/engine/launcher-pod.test.ts.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { LauncherReplySchema, VM_LAUNCHER_MAX_REQUEST_BYTES, type LauncherReply } from '../../api/vm-pod.js';
import { parseRequestLine, startControlServer } from './control-server.js';
import { launcherRequest } from '../src/vm/launcher-client.js';

describe('parseRequestLine', () => {
  it('parses the three ops', () => {
    for (const op of ['status', 'start', 'restart-incoming']) expect(parseRequestLine(JSON.stringify({ op }))).toEqual({ request: { op } });
  });

  it('parses a lazy restart-incoming', () => {
    const lazy = { ramBackendId: 'pc.ram', sizeBytes: 1 << 30, offset: 1 << 20 };
    expect(parseRequestLine(JSON.stringify({ op: 'restart-incoming', lazy }))).toEqual({ request: { op: 'restart-incoming', lazy } });
  });

  it.each([
    { ramBackendId: 'pc.ram', sizeBytes: 1 << 30 },
    { ramBackendId: 'pc.ram', sizeBytes: 1 << 30, offset: 1 << 20, path: '/etc/shadow' },
    { ramBackendId: 'pc.ram,mem-path=/x', sizeBytes: 1 << 30, offset: 0 },
    { ramBackendId: 'pc.ram', sizeBytes: 4097, offset: 0 },
    { ramBackendId: 'pc.ram', sizeBytes: 2 ** 45, offset: 0 },
    { ramBackendId: 'pc.ram', sizeBytes: 4096, offset: -4096 },
    { ramBackendId: 'pc.ram', sizeBytes: '4096', offset: 0 },
  ])('refuses the lazy mapping %j', (lazy) => {
    const r = parseRequestLine(JSON.stringify({ op: 'restart-incoming', lazy }));
    expect('reply' in r && r.reply.ok === false).toBe(true);
  });

  it.each(['not json', '[]', '{"op":"exec","cmd":"sh"}', '{"op":"status","extra":1}', '{}', 'null'])('answers %s with an error', (line) => {
    const r = parseRequestLine(line);
    expect('reply' in r && r.reply.ok === false).toBe(true);
  });
});

describe('control server', () => {
  let dir: string;
  let sockPath: string;
  let server: net.Server;
  const calls: string[] = [];
  const received: number[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'launcher-ctl-'));
    sockPath = path.join(dir, 'launcher.sock');
    server = await startControlServer(
      sockPath,
      async (req, fd): Promise<LauncherReply> => {
        calls.push(req.op);
        if (fd !== undefined) {
          received.push(fs.fstatSync(fd).ino);
          fs.closeSync(fd);
        }
        if (req.op === 'start') throw new Error('boom');
        // A slow operation, to show that replies keep the request order.
        if (req.op === 'restart-incoming') await new Promise((r) => setTimeout(r, 50));
        return { ok: true, state: 'running', generation: calls.length };
      },
      () => undefined,
    );
  });

  afterAll(async () => {
    await new Promise((r) => server.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Sends `data`, half-closes, and collects every reply line until the server closes. */
  function exchange(data: string | Buffer): Promise<LauncherReply[]> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection({ path: sockPath, allowHalfOpen: true });
      let out = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => (out += d));
      sock.on('error', reject);
      sock.on('close', () => resolve(out.split('\n').filter(Boolean).map((l) => LauncherReplySchema.parse(JSON.parse(l)))));
      sock.end(data);
    });
  }

  it('is a 0600 socket', () => {
    expect(fs.statSync(sockPath).mode & 0o777).toBe(0o600);
  });

  it('answers each line in order, also a last line without a newline', async () => {
    const replies = await exchange('{"op":"restart-incoming"}\n{"op":"status"}\n\n{"op":"status"}');
    expect(replies).toHaveLength(3);
    expect(replies.map((r) => r.ok && r.generation)).toEqual([1, 2, 3]);
  });

  it('turns a handler failure and bad lines into error replies and keeps serving', async () => {
    const replies = await exchange('{"op":"start"}\n{bad\n{"op":"rm -rf /"}\n{"op":"status"}\n');
    expect(replies.map((r) => r.ok)).toEqual([false, false, false, true]);
    expect(replies[0]).toEqual({ ok: false, error: 'start failed: boom' });
  });

  it('takes the snapshot fd of a lazy restart-incoming after its awaitingFd reply', async () => {
    const file = path.join(dir, 'snapshot');
    fs.writeFileSync(file, 'x');
    const fd = fs.openSync(file, 'r');
    try {
      const lazy = { ramBackendId: 'pc.ram', sizeBytes: 4096, offset: 0 };
      const reply = await launcherRequest(net.createConnection(sockPath), { op: 'restart-incoming', lazy }, 5_000, fd);
      expect(reply.awaitingFd).toBeUndefined();
      expect(received).toEqual([fs.statSync(file).ino]);
      // The client's own copy stays its own.
      expect(fs.fstatSync(fd).ino).toBe(fs.statSync(file).ino);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('refuses bytes after a lazy restart-incoming line before awaitingFd, and hangs up', async () => {
    const lazy = { ramBackendId: 'pc.ram', sizeBytes: 4096, offset: 0 };
    const replies = await exchange(JSON.stringify({ op: 'restart-incoming', lazy }) + '\n{"op":"status"}\n');
    expect(replies).toEqual([{ ok: false, error: expect.stringMatching(/nothing may follow a lazy restart-incoming/) }]);
  });

  it('answers an over-long line with an error and hangs up', async () => {
    const replies = await exchange(Buffer.alloc(VM_LAUNCHER_MAX_REQUEST_BYTES + 4096, 'x'));
    expect(replies).toEqual([{ ok: false, error: expect.stringMatching(new RegExp(`longer than ${VM_LAUNCHER_MAX_REQUEST_BYTES} bytes`)) }]);
    // The server is still there for the next client.
    expect(await exchange('{"op":"status"}\n')).toEqual([expect.objectContaining({ ok: true })]);
  });
});
