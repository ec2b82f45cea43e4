// bin/vmsnap-agent: the engine commands start from the Node start-up snapshot
// when it was built by this node, fall back to the plain bundle when not, and
// never load NODE_EXTRA_CA_CERTS; times measured from the process start hold
// in both modes (performance.now() would count from the snapshot's build).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../agent/src/package-root.js';
import { tracedAtMs } from '../../agent/src/clock.js';
import { startBenchVm } from '../../bench/qemu-vm.js';
import { scratchDir } from './harness.js';

const root = packageRoot();
let dir: string;

beforeAll(() => {
  dir = scratchDir('launcher');
});

function runBin(bin: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string; wallMs: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VMSNAP_TRACE: '1', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr, wallMs: Date.now() - t0 }));
  });
}

/** A copy of bin/ and dist/cli/ (the checkout layout the launcher expects), to change the stamp in. */
function copyOfLauncher(name: string): string {
  const to = path.join(dir, name);
  fs.mkdirSync(path.join(to, 'dist'), { recursive: true });
  fs.cpSync(path.join(root, 'bin'), path.join(to, 'bin'), { recursive: true });
  fs.cpSync(path.join(root, 'dist/cli'), path.join(to, 'dist/cli'), { recursive: true });
  return path.join(to, 'bin/vmsnap-agent');
}

const missing = () => path.join(dir, 'no-such-file.vms');

it('runs the engine commands from the start-up snapshot, without loading extra CA certificates', async () => {
  expect(fs.existsSync(path.join(root, 'dist/cli/engine.blob'))).toBe(true);
  const r = await runBin(path.join(root, 'bin/vmsnap-agent'), ['inspect', missing()], { NODE_EXTRA_CA_CERTS: path.join(dir, 'no-such-ca.pem') });
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/start \(start-up snapshot\)/);
  expect(r.stderr).toMatch(/vmsnap-agent: .*no-such-file\.vms/);
  // Node warns at start when it loads (or fails to load) the extra certificates.
  expect(r.stderr).not.toMatch(/extra certs/i);
});

it('falls back to the plain bundle when the snapshot was built by another node', async () => {
  const bin = copyOfLauncher('other-node');
  // The stamp carries the building node's mtime: any other mtime means another node.
  const stamp = path.join(path.dirname(bin), '../dist/cli/engine.blob.node');
  const node = fs.statSync(process.execPath);
  fs.utimesSync(stamp, node.atime, new Date(node.mtimeMs - 1000));
  const r = await runBin(bin, ['inspect', missing()]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/start \(plain node\)/);
  expect(r.stderr).toMatch(/vmsnap-agent: .*no-such-file\.vms/);
});

it('finds the snapshot when run through a symlink (as npm links bins) or a relative path', async () => {
  const link = path.join(dir, 'linked-vmsnap-agent');
  fs.rmSync(link, { force: true });
  fs.symlinkSync(path.join(root, 'bin/vmsnap-agent'), link);
  expect((await runBin(link, ['inspect', missing()])).stderr).toMatch(/start \(start-up snapshot\)/);
  const relative = await new Promise<string>((resolve) => {
    const child = spawn('sh', ['-c', 'cd bin && ./vmsnap-agent inspect "$0"', missing()], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, VMSNAP_TRACE: '1' } });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', () => resolve(stderr));
  });
  expect(relative).toMatch(/start \(start-up snapshot\)/);
});

it('falls back to the plain bundle when there is no snapshot, and under NODE_OPTIONS', async () => {
  const bin = copyOfLauncher('no-blob');
  fs.rmSync(path.join(path.dirname(bin), '../dist/cli/engine.blob'));
  expect((await runBin(bin, ['inspect', missing()])).stderr).toMatch(/start \(plain node\)/);
  const withOptions = await runBin(path.join(root, 'bin/vmsnap-agent'), ['inspect', missing()], { NODE_OPTIONS: '--no-warnings' });
  expect(withOptions.stderr).toMatch(/start \(plain node\)/);
});

it("reports the time from the process start to 'migrate' in both modes", async () => {
  // NODE_OPTIONS makes the launcher use the plain bundle.
  const modes: Array<Record<string, string>> = [{}, { NODE_OPTIONS: '--no-warnings' }];
  for (const [i, env] of modes.entries()) {
    // A VM that never ran is saved once: one each.
    const vm = await startBenchVm({ dir, name: `launcher-${i}`, ramBytes: 64 << 20 });
    try {
      const r = await runBin(path.join(root, 'bin/vmsnap-agent'), ['save', '--qmp', vm.qmp, '--out', path.join(dir, `${i}.vms`), '--json'], env);
      if (r.code !== 0) throw new Error(`save failed: ${r.stderr}`);
      expect(r.stderr).toMatch(env.NODE_OPTIONS ? /start \(plain node\)/ : /start \(start-up snapshot\)/);
      // The trace's times count from the process start (VMSNAP_TRACE=1, set by runBin).
      const at = tracedAtMs(r.stderr, 'migrate issued')!;
      expect(at).toBeGreaterThan(0);
      expect(at).toBeLessThan(r.wallMs);
    } finally {
      await vm.stop();
    }
  }
});
