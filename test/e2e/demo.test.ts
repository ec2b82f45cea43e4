// The README's first command, run non-interactively with a state directory
// of its own (its own control plane instance): it must end with the snapshot
// and the restore Succeeded and the guest alive with its memory intact.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../cluster/controlplane.js';

const state = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-demo-test-'));
const env = { ...process.env, VMSNAP_STATE: state, VMSNAP_TEST_CLUSTER_STATE: path.join(state, 'cluster'), VMSNAP_DEMO_MEM_MIB: '256', VMSNAP_DEMO_FILL_MIB: '96' };

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

afterAll(async () => {
  await run(process.execPath, ['dist/demo/k8s-demo.js', '--down'], 120_000);
  await run('bash', ['cluster/down.sh', '--purge'], 120_000).catch(() => undefined);
  fs.rmSync(state, { recursive: true, force: true });
}, 300_000);

it('npm run demo: snapshot and restore through Kubernetes, guest intact, stack left running', async () => {
  const demo = await run('bash', ['scripts/demo.sh'], 25 * 60_000);
  if (demo.code !== 0) throw new Error(`the demo failed:\n${demo.out.slice(-3000)}`);
  expect(demo.out).toMatch(/3\. kubectl apply -f examples\/vmsnapshot\.yaml[\s\S]*Succeeded: 256Mi/);
  expect(demo.out).toMatch(/\d+\/256 MiB/); // the progress bar
  expect(demo.out).toMatch(/4\. kubectl apply -f examples\/vmrestore\.yaml[\s\S]*Succeeded in/);
  expect(demo.out).toMatch(/after: pass \d+ ok: 96 MiB intact/);
  expect(demo.out).toMatch(/kubectl apply -> Succeeded: snapshot \d+ ms/);
  expect(demo.out).toMatch(/Tear it down: npm run demo:down/);
  // Left running: the operator and the agent outlive the demo command.
  const record = JSON.parse(fs.readFileSync(path.join(state, 'k8s-demo.json'), 'utf8')) as { pids: number[] };
  for (const pid of record.pids) expect(() => process.kill(pid, 0)).not.toThrow();
}, 30 * 60_000);
