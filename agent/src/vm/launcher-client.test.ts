import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { LAUNCHER_REPLY_MAX_BYTES, launcherRequest, parseLauncherReply } from './launcher-client.js';

describe('parseLauncherReply', () => {
  it('accepts the protocol replies', () => {
    expect(parseLauncherReply('{"ok":true,"state":"incoming","qemuPid":42,"generation":2}')).toEqual({ ok: true, state: 'incoming', qemuPid: 42, generation: 2 });
  });

  it('refuses what is not the protocol and says what the launcher said', () => {
    expect(() => parseLauncherReply('not json')).toThrow(/not JSON/);
    expect(() => parseLauncherReply('{"ok":true,"state":"hacked","generation":1}')).toThrow(/does not follow the protocol/);
    expect(() => parseLauncherReply('{"ok":true,"state":"running","generation":1,"argv":["/bin/sh"]}')).toThrow(/does not follow the protocol/);
    expect(() => parseLauncherReply('{"ok":false,"error":"qemu failed\\u001b[2J to start"}')).toThrow(/the launcher refused: qemu failed \[2J to start/);
  });
});

describe('launcherRequest against a hostile launcher', () => {
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-launcher-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function against(behave: (s: net.Socket, line: string) => void, timeoutMs = 2000) {
    const sock = path.join(dir, `l${Math.random().toString(36).slice(2)}.sock`);
    const requests: string[] = [];
    const server = net.createServer((s) => {
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString();
        const nl = buf.indexOf('\n');
        if (nl >= 0) {
          requests.push(buf.slice(0, nl));
          behave(s, buf.slice(0, nl));
        }
      });
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const client = net.createConnection(sock);
      await new Promise((r) => client.once('connect', r));
      return { result: await launcherRequest(client, { op: 'restart-incoming' }, timeoutMs).then((v) => v, (e: Error) => e), requests };
    } finally {
      server.close();
    }
  }

  it('sends one request line and reads one reply line', async () => {
    const { result, requests } = await against((s) => void s.write('{"ok":true,"state":"incoming","generation":3}\n'));
    expect(requests).toEqual(['{"op":"restart-incoming"}']);
    expect(result).toEqual({ ok: true, state: 'incoming', generation: 3 });
  });

  it('gives up on a launcher that never answers, floods, or hangs up', async () => {
    expect(String((await against(() => undefined, 300)).result)).toMatch(/did not answer 'restart-incoming' within/);
    expect(String((await against((s) => void s.write('x'.repeat(LAUNCHER_REPLY_MAX_BYTES * 4)))).result)).toMatch(/exceeds 8192 bytes/);
    expect(String((await against((s) => void s.end())).result)).toMatch(/closed its socket without answering/);
  });
});
