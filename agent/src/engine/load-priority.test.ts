import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { channelThreadsStarted, demoteMainThreadDuringLoad, hasEffectiveCapability, LOAD_MAIN_THREAD_NICE, threadIds } from './load-priority.js';

// A stand-in for a loading QEMU: a process whose main thread starts new threads when told to
// (a line on stdin starts one worker thread), as QEMU's starts one thread per multifd channel.
const CHILD = `
const { Worker } = require('node:worker_threads');
const workers = [];
process.stdin.on('data', (d) => {
  for (const _ of d.toString().trim()) workers.push(new Worker('setInterval(() => {}, 1000)', { eval: true }));
});
process.stdout.write('ready\\n');
`;

let child: ChildProcess | undefined;
afterEach(() => child?.kill('SIGKILL'));

async function start(): Promise<number> {
  child = spawn(process.execPath, ['-e', CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child!.stdout!.once('data', () => resolve()));
  return child.pid!;
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!ok()) throw new Error(`never: ${what}`);
}

const alive = () => child !== undefined && child.exitCode === null && child.signalCode === null;

it('reads CAP_SYS_NICE (bit 23) from the effective set', () => {
  expect(hasEffectiveCapability('CapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n', 23)).toBe(true);
  expect(hasEffectiveCapability('CapEff:\t00000000a80425fb\n', 23)).toBe(false);
  expect(hasEffectiveCapability('CapEff:\t0000000000800000\n', 23)).toBe(true);
  expect(hasEffectiveCapability('no such line', 23)).toBe(false);
});

it('channelThreadsStarted counts only threads that were not there before', () => {
  expect(channelThreadsStarted([1, 2, 3], [1, 2, 3, 7], 2)).toBe(false);
  expect(channelThreadsStarted([1, 2, 3], [1, 3, 7, 8], 2)).toBe(true);
  expect(channelThreadsStarted([1, 2], [1, 2], 0)).toBe(true);
});

it('lowers only the main thread once the channel threads exist, and puts every thread back at the end', async () => {
  const pid = await start();
  const before = threadIds(pid);
  const demotion = demoteMainThreadDuringLoad(pid, before, 2, alive);
  // Not yet: the channel threads would inherit the low priority.
  await new Promise((r) => setTimeout(r, 50));
  expect(os.getPriority(pid)).toBe(0);
  child!.stdin!.write('xx\n');
  await until('main thread lowered', () => os.getPriority(pid) === LOAD_MAIN_THREAD_NICE);
  const channels = threadIds(pid).filter((t) => !before.includes(t));
  for (const t of channels) expect(os.getPriority(t)).toBe(0);
  // A thread the lowered main thread starts inherits its priority: the end puts it back too.
  const lowered = threadIds(pid);
  child!.stdin!.write('x\n');
  await until('a new thread', () => threadIds(pid).some((t) => !lowered.includes(t)));
  const late = threadIds(pid).filter((t) => !lowered.includes(t));
  expect(late.map((t) => os.getPriority(t))).toContain(LOAD_MAIN_THREAD_NICE);
  expect(demotion.end()).toEqual({ demotedMs: expect.any(Number), nice: LOAD_MAIN_THREAD_NICE });
  for (const t of threadIds(pid)) expect(os.getPriority(t)).toBe(0);
});

it('changes nothing when the channel threads never come or the process is gone', async () => {
  const pid = await start();
  const demotion = demoteMainThreadDuringLoad(pid, threadIds(pid), 2, alive);
  expect(demotion.end()).toEqual({ skipped: expect.stringMatching(/channel threads did not start/) });
  child!.stdin!.write('xx\n');
  await new Promise((r) => setTimeout(r, 100));
  expect(os.getPriority(pid)).toBe(0);
  const gone = demoteMainThreadDuringLoad(pid, [], 1, () => false);
  await new Promise((r) => setTimeout(r, 50));
  expect(os.getPriority(pid)).toBe(0);
  expect(gone.end()).toHaveProperty('skipped');
});
