// processAlive must see a process whose main thread has exited while another
// thread still runs (as a killed QEMU's I/O threads do): those threads keep
// the process's files, and the locks on its disk images, open.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { probeQmp, processAlive, waitForExit } from './qemu-control.js';

// The main thread leaves with pthread_exit; a second thread blocks reading stdin.
const PROGRAM = `
#include <pthread.h>
#include <unistd.h>
static void *reader(void *arg) { char c; (void)arg; while (read(0, &c, 1) > 0) {} return 0; }
int main(void) { pthread_t t; pthread_create(&t, 0, reader, 0); pthread_exit(0); }
`;

let dir: string;
let binary: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qemu-control-'));
  binary = path.join(dir, 'leader-exits');
  fs.writeFileSync(`${binary}.c`, PROGRAM);
  const cc = spawnSync('cc', ['-pthread', '-o', binary, `${binary}.c`], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr}`);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const leaderState = (pid: number) => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat[stat.lastIndexOf(')') + 2];
};

it('a process is alive while any of its threads runs, even after its main thread has become a zombie', async () => {
  const child = spawn(binary, [], { stdio: ['pipe', 'ignore', 'ignore'] });
  const pid = child.pid!;
  try {
    await leaderExitsWhileAThreadRuns(pid, () => child.stdin!.end());
  } finally {
    child.kill('SIGKILL');
  }
});

async function leaderExitsWhileAThreadRuns(pid: number, endLastThread: () => void) {
  const deadline = Date.now() + 10_000;
  while (leaderState(pid) !== 'Z') {
    if (Date.now() > deadline) throw new Error('the main thread did not exit');
    await new Promise((r) => setTimeout(r, 10));
  }
  expect(processAlive(pid)).toBe(true);
  expect(await waitForExit(pid, 200)).toBe(false);

  endLastThread();
  expect(await waitForExit(pid, 10_000)).toBe(true);
  expect(processAlive(pid)).toBe(false);
}

describe('probeQmp tells "nobody there" from "busy" by the socket error code', () => {
  it('absent: no socket file, or a stale one nobody listens on', async () => {
    expect(await probeQmp(path.join(dir, 'none.sock'))).toMatchObject({ kind: 'absent' });
    // A listener killed with SIGKILL leaves its socket file behind: connect gets ECONNREFUSED.
    const stale = path.join(dir, 'stale.sock');
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(fs.existsSync(stale)).toBe(true);
    expect(await probeQmp(stale)).toMatchObject({ kind: 'absent', message: expect.stringContaining('stale.sock') });
  });

  it('unreachable: something accepts the connection but does not answer (a busy monitor)', async () => {
    const busy = path.join(dir, 'busy.sock');
    const server = net.createServer(() => undefined).listen(busy);
    await new Promise((r) => server.once('listening', r));
    try {
      expect(await probeQmp(busy, 200)).toMatchObject({ kind: 'unreachable' });
    } finally {
      server.close();
    }
  });
});
