// A process is its pid plus its start time, or a pidfd: a pid the kernel handed to another
// process is never taken for the recorded one.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { parseProcStat, peerIdentity, processIdentity, readPeerProcess, sameProcess } from './process-identity.js';
import { waitForExit } from '../daemon/qemu-control.js';

const STAT = (comm: string, start: number) => `4242 (${comm}) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 ${start} 123456 789 18446744073709551615`;

describe('parseProcStat', () => {
  it('reads the state and the start time, whatever the command name holds', () => {
    expect(parseProcStat(STAT('qemu-system-x86', 987654))).toEqual({ state: 'S', startTicks: 987654 });
    expect(parseProcStat(STAT('evil) R 1 2 3 (x', 55))).toEqual({ state: 'S', startTicks: 55 });
    expect(() => parseProcStat('garbage')).toThrow(/stat/);
    expect(parseProcStat(fs.readFileSync('/proc/self/stat', 'utf8')).state).toBe('R');
  });
});

describe('sameProcess', () => {
  it('refuses another process with the recorded pid (a later start time) and a pid that is gone', () => {
    const saved = { pid: 4242, startTicks: 1000 };
    expect(sameProcess(saved, { pid: 4242, startTicks: 1000 })).toBe(true);
    expect(sameProcess(saved, { pid: 4242, startTicks: 5000 })).toBe(false);
    expect(sameProcess(saved, { pid: 4243, startTicks: 1000 })).toBe(false);
    expect(sameProcess(saved, undefined)).toBe(false);
    // A header written without a start time can only be compared by pid.
    expect(sameProcess({ pid: 4242 }, { pid: 4242, startTicks: 5000 })).toBe(true);
  });

  it('on real processes: a live one is itself, one that exited is not', async () => {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    await once(child, 'spawn');
    const recorded = processIdentity(child.pid!)!;
    expect(recorded.startTicks).toBeGreaterThan(0);
    expect(sameProcess(recorded, processIdentity(child.pid!))).toBe(true);
    // The same pid with another start time stands for the process that got the pid next.
    expect(sameProcess({ ...recorded, startTicks: recorded.startTicks + 1 }, processIdentity(child.pid!))).toBe(false);
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(sameProcess(recorded, processIdentity(child.pid!))).toBe(false);
  });
});

describe('readPeerProcess', () => {
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peer-identity-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("reads /proc of the socket's peer while it lives, and refuses once that process is gone", async () => {
    const sock = path.join(dir, 'peer.sock');
    // The peer: another process listening on a socket; our end of the connection outlives it.
    const server = spawn(process.execPath, ['-e', `require("net").createServer(() => {}).listen(${JSON.stringify(sock)}, () => console.log("up"))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(server.stdout!, 'data');
    const conn = net.createConnection(sock);
    await once(conn, 'connect');
    conn.on('error', () => undefined); // the peer's death resets our end
    const fd = (conn as unknown as { _handle: { fd: number } })._handle.fd;
    const peer = { peerCredentials: () => ({ pid: server.pid! }), socketFd: () => fd };
    expect(readPeerProcess(fd, server.pid!, (pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'))).toContain('createServer');
    expect(peerIdentity(peer)).toEqual(processIdentity(server.pid!));
    server.kill('SIGKILL');
    await once(server, 'exit');
    expect(await waitForExit(server.pid!, 5000)).toBe(true);
    // Whatever has that pid now (nothing, or a process that got it since) is not read as the peer.
    expect(() => readPeerProcess(fd, server.pid!, () => 'read')).toThrow(/exited/);
    expect(peerIdentity(peer)).toBeUndefined();
    conn.destroy();
  });
});
