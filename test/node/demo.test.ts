// The README's first command, run non-interactively on the node suite's cluster: it must end with
// the snapshot and the restore Succeeded, the guest alive with its memory intact, the operator, the
// agent and the VM running as pods, and the export lines a user needs; then, as a user would, the
// agent pod is deleted and the demo VM's QEMU keeps running.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../../stack/controlplane.js';
import { nodeClusterStateDir, nodeKubectlOk } from '../../stack/node-cluster.js';
import { qemuPidsOfPod } from '../../stack/vm-pod.js';

const state = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-demo-test-'));
const env = { ...process.env, VMSNAP_STATE: state, VMSNAP_TEST_NODE_CLUSTER_STATE: nodeClusterStateDir() };

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
  const down = await run(process.execPath, ['dist/demo/k8s-demo.js', '--down'], 300_000);
  fs.rmSync(state, { recursive: true, force: true });
  expect(down.out).toMatch(/demo stopped/);
}, 330_000);

it('npm run demo: the chart and the VM as pods on the node, snapshot and restore, guest intact, stack left running', async () => {
  const demo = await run('bash', ['scripts/demo.sh'], 40 * 60_000);
  if (demo.code !== 0) throw new Error(`the demo failed:\n${demo.out.slice(-3000)}`);
  expect(demo.out).toMatch(/5\. kubectl apply -f examples\/vmsnapshot\.yaml[\s\S]*Succeeded: 512Mi/);
  expect(demo.out).toMatch(/\d+\/512 MiB/); // the progress bar
  expect(demo.out).toMatch(/Uploaded: \d+ MiB of present pages \(\d+ MiB stored\) in [\d.]+ s to s3:\/\/demo-snapshots\/demo\/default\/demo-snapshot-/);
  expect(demo.out).toMatch(/6\. kubectl apply -f examples\/vmrestore\.yaml[\s\S]*Succeeded in/);
  expect(demo.out).toMatch(/after: pass \d+ ok: 256 MiB intact/);
  expect(demo.out).toMatch(/kubectl apply -> Succeeded: snapshot \d+ ms/);
  expect(demo.out).toMatch(/^default +demo +1\/1 +Running/m);
  expect(demo.out).toMatch(/^vmsnap-system +vmsnap-agent-\S+ +1\/1 +Running/m);
  expect(demo.out).toMatch(/^vmsnap-system +vmsnap-operator-\S+ +1\/1 +Running/m);
  const lastLine = demo.out.trimEnd().split('\n').at(-1)!;
  expect(lastLine).toBe(`export KUBECONFIG=${path.join(nodeClusterStateDir(), 'kubeconfig')}`);

  // Left running, and the VM outlives its agent.
  const uid = (await nodeKubectlOk(['get', 'pod', 'demo', '-n', 'default', '-o', 'jsonpath={.metadata.uid}'])).trim();
  const qemu = qemuPidsOfPod(uid);
  expect(qemu).toHaveLength(1);
  await nodeKubectlOk(['delete', 'pod', '-n', 'vmsnap-system', '-l', 'app.kubernetes.io/component=agent', '--wait=true', '--timeout=120s']);
  await nodeKubectlOk(['rollout', 'status', 'daemonset/vmsnap-agent', '-n', 'vmsnap-system', '--timeout=180s']);
  expect(qemuPidsOfPod(uid)).toEqual(qemu);
}, 45 * 60_000);
