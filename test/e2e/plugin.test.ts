// `kubectl vmsnap` end to end: kubectl finds the plugin on PATH (a symlink, as `npm install -g`
// makes one) and runs it against the real API server, with the operator and an agent as processes
// and a real QEMU guest: ls, save --wait, restore --wait, a failure, and the YAML of --dry-run.
import fs from 'node:fs';
import path from 'node:path';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { createNamespace, kubectl, repoRoot } from '../../stack/controlplane.js';
import { run, type RunResult } from '../../stack/run.js';
import { qemuRunState } from '../../kit/qemu.js';
import { startGuest, type Guest } from '../../kit/guest.js';
import { getJson } from './objects.js';
import { startStack, tearDownStack, type Stack } from '../../stack/e2e.js';
import { expectVerifying } from '../../kit/guest.js';

let stack: Stack;
let binDir: string;
const guests: Guest[] = [];

beforeAll(async () => {
  stack = await startStack(['node-a']);
  binDir = path.join(stack.workDir, 'global-bin');
  fs.mkdirSync(binDir, { recursive: true });
  fs.symlinkSync(path.join(repoRoot, 'bin/kubectl-vmsnap'), path.join(binDir, 'kubectl-vmsnap'));
}, 30 * 60 * 1000);

afterAll(() => tearDownStack(stack, guests));

/** `kubectl vmsnap ARGS` through the real kubectl, which finds kubectl-vmsnap on PATH. */
function vmsnap(args: string[]): Promise<RunResult> {
  const env = { ...process.env, KUBECONFIG: stack.cp.kubeconfig, PATH: `${binDir}:${path.dirname(stack.cp.kubectl)}:${process.env.PATH}` };
  return run(stack.cp.kubectl, ['vmsnap', ...args], { env });
}

const qemuStatus = async (socket: string) => (await qemuRunState(socket)).status;

it('saves with --wait and a progress bar, lists, restores a copy with --wait, and fails clearly', async () => {
  const ns = await createNamespace('e2e-plugin');
  const guest = await startGuest({ dir: path.join(stack.agents.get('node-a')!.vmRoot, ns, 'demo'), name: 'demo', memMiB: 256, fillMiB: 64, seed: 3 });
  guests.push(guest);
  await guest.waitForSerial(/VMSNAP PASS n=1 ok/, 120_000);

  // --dry-run -o yaml: the ordinary VMSnapshot it would create, which kubectl applies as it is.
  const dry = await vmsnap(['save', 'demo', '-n', ns, '--name', 'by-yaml', '--channels', '2', '--dry-run', '-o', 'yaml']);
  expect(dry.code).toBe(0);
  expect(dry.stdout).toMatch(/^kind: VMSnapshot$/m);
  const applied = await kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], { input: dry.stdout });
  expect(applied.stderr).toBe('');
  expect(applied.stdout).toMatch(/vmsnapshot\.vmsnap\.io\/by-yaml created \(server dry run\)/);
  expect((await kubectl(['get', 'vmss', 'by-yaml', '-n', ns])).code).not.toBe(0); // nothing was created

  const saved = await vmsnap(['save', 'demo', '-n', ns, '--name', 'first', '--wait']);
  expect(saved.stderr).not.toMatch(/Failed/);
  expect(saved.code).toBe(0);
  expect(saved.stdout).toMatch(/^vmsnapshot\.vmsnap\.io\/first created$/m);
  expect(saved.stdout).toMatch(/^vmsnapshot\.vmsnap\.io\/first Succeeded in \S+$/m);
  expect(saved.stderr).toMatch(/\[#{30}\] 100%\s+\S+\/256Mi\s+Succeeded/); // the bar, from status bytes
  const snap = await getJson('vmsnapshot/first', ns);
  expect(snap.status.phase).toBe('Succeeded');
  expect(readHeader(snap.status.file.path).state).toBe('complete');

  const ls = await vmsnap(['ls', '-n', ns]);
  expect(ls.code).toBe(0);
  expect(ls.stdout).toMatch(/^KIND\s+NAME\s+VM\s+FROM\s+PHASE/);
  expect(ls.stdout).toMatch(/^snapshot\s+first\s+demo\s+Succeeded\s+256Mi\s/m);

  const restored = await vmsnap(['restore', 'first', '--as', 'demo-copy', '-n', ns, '--wait']);
  expect(restored.code).toBe(0);
  expect(restored.stdout).toMatch(/^vmrestore\.vmsnap\.io\/demo-copy-from-first-\d{8}-\d{6} Succeeded/m);
  const copyDir = path.join(stack.agents.get('node-a')!.vmRoot, ns, 'demo-copy');
  expect(await qemuStatus(path.join(copyDir, 'qmp.sock'))).toBe('running');
  await expectVerifying(path.join(copyDir, 'serial.log'), { from: 0 });
  expect(await qemuStatus(guest.qmpPath)).toBe('running'); // the original is untouched
  expect((await vmsnap(['ls', 'demo-copy', '-n', ns])).stdout).toMatch(/^restore\s+demo-copy-from-first-\S+\s+demo-copy\s+first\s+Succeeded/m);

  // A save that fails: exit 1 and the operator's reason.
  // A missing VM is waited for until spec.failureDeadline (GitOps may create it later); here 5 s.
  const missing = await vmsnap(['save', 'nobody', '-n', ns, '--wait', '--timeout', '2m', '--failure-deadline', '5s']);
  expect(missing.code).toBe(1);
  expect(missing.stderr).toMatch(/vmsnapshot\.vmsnap\.io\/nobody-\S+ Failed: .*VM "nobody" not found/);

  // Bad arguments: exit 2 and the argument named, nothing created.
  const bad = await vmsnap(['save', 'Demo_VM', '-n', ns]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/VM "Demo_VM": .*DNS-1123 label/);
  const taken = await vmsnap(['save', 'demo', '-n', ns, '--name', 'first']);
  expect(taken.code).toBe(1);
  expect(taken.stderr).toMatch(/vmsnapshot\.vmsnap\.io\/first exists already in namespace/);
});
