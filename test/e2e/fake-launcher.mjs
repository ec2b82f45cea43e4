// A stand-in for the vmsnap launcher (agent/launcher/), for the agent's e2e tests only: it speaks
// the protocol of api/vm-pod.ts on LAUNCHER_SOCKET and owns a real QEMU started from QEMU_ARGV
// (JSON), adding `-incoming defer` on restart-incoming. It runs in the test pod's cgroup, so the
// QEMUs it starts are the pod's.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

const argv = JSON.parse(process.env.QEMU_ARGV);
const qmpSocket = process.env.QMP_SOCKET;
const logPath = process.env.QEMU_LOG;
let qemu;
let state = 'stopped';
let generation = 0;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function qmpAccepts() {
  for (let i = 0; i < 600; i++) {
    const ok = await new Promise((r) => {
      const s = net.createConnection(qmpSocket);
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (qemu.exitCode !== null || qemu.signalCode !== null) throw new Error(`QEMU exited (${qemu.exitCode ?? qemu.signalCode}) before its QMP socket accepted`);
    await sleep(50);
  }
  throw new Error('QMP socket did not accept within 30 s');
}

async function startQemu(extra) {
  fs.rmSync(qmpSocket, { force: true });
  const log = fs.openSync(logPath, 'a');
  qemu = spawn(argv[0], [...argv.slice(1), ...extra], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  generation++;
  state = 'starting';
  await qmpAccepts();
}

async function stopQemu() {
  if (!qemu || qemu.exitCode !== null || qemu.signalCode !== null) return;
  const exited = new Promise((r) => qemu.once('exit', r));
  qemu.kill('SIGTERM');
  const timer = setTimeout(() => qemu.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

const reply = () => ({ ok: true, state, generation, ...(qemu?.pid ? { qemuPid: qemu.pid } : {}) });

async function handle(req) {
  if (req.op === 'status') return reply();
  if (req.op === 'start') {
    if (state === 'stopped') {
      await startQemu([]);
      state = 'running';
    }
    return reply();
  }
  if (req.op === 'restart-incoming') {
    await stopQemu();
    await startQemu(['-incoming', 'defer']);
    state = 'incoming';
    return reply();
  }
  return { ok: false, error: `unknown op ${req.op}` };
}

fs.rmSync(process.env.LAUNCHER_SOCKET, { force: true });
net
  .createServer((s) => {
    let buf = '';
    let chain = Promise.resolve();
    s.on('error', () => undefined);
    s.on('data', (d) => {
      buf += d;
      for (let nl; (nl = buf.indexOf('\n')) >= 0; ) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        chain = chain.then(async () => {
          let out;
          try {
            out = await handle(JSON.parse(line));
          } catch (err) {
            out = { ok: false, error: String(err.message ?? err) };
          }
          s.write(JSON.stringify(out) + '\n');
        });
      }
    });
  })
  .listen(process.env.LAUNCHER_SOCKET, () => console.log('ready'));

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => stopQemu().then(() => process.exit(0)));
