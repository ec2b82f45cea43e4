// The images build here without a registry (cluster/images/build.sh: buildah on locally built
// Debian bases) and hold what their pods run: this fails as soon as the Dockerfile stops building.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import fs from 'node:fs';

const execFileAsync = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const images = path.join(root, 'cluster/images');

// A cold build (two Debian bases, npm ci, the addon, QEMU from backports) takes many minutes on
// two shared cores; a warm one takes seconds.
const BUILD_TIMEOUT_MS = 60 * 60_000;

async function buildah(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('bash', [path.join(images, 'buildah.sh'), ...args], { maxBuffer: 16 << 20 });
  return stdout;
}

/** Runs COMMAND in a throw-away container of IMAGE and returns its stdout. */
async function runIn(image: string, command: string[]): Promise<string> {
  const ctr = (await buildah(['from', '--quiet', '--pull=never', image])).trim();
  try {
    return await buildah(['run', '--isolation', 'chroot', ctr, '--', ...command]);
  } finally {
    await buildah(['rm', ctr]);
  }
}

/**
 * Calls `read` with the root directory of a throw-away container of IMAGE (`buildah mount`): the
 * image's files read directly, not through the output of a command run in it.
 */
async function withRootOf<T>(image: string, read: (root: string) => T): Promise<T> {
  const ctr = (await buildah(['from', '--quiet', '--pull=never', image])).trim();
  try {
    return read((await buildah(['mount', ctr])).trim());
  } finally {
    await buildah(['rm', ctr]);
  }
}

async function config(image: string): Promise<{ Entrypoint?: string[]; Cmd?: string[]; User?: string }> {
  const out = await buildah(['inspect', '--type', 'image', image]);
  return (JSON.parse(out) as { OCIv1: { config: { Entrypoint?: string[]; Cmd?: string[]; User?: string } } }).OCIv1.config;
}

let built: Map<string, string>;
const byRepo = (repo: string): string => {
  const name = [...built.keys()].find((n) => n.startsWith(`${repo}:`));
  if (!name) throw new Error(`build.sh printed no ${repo} image; it printed ${[...built.keys()].join(', ')}`);
  return name;
};

beforeAll(async () => {
  const { stdout } = await execFileAsync('bash', [path.join(images, 'build.sh')], {
    cwd: root,
    maxBuffer: 64 << 20,
    timeout: BUILD_TIMEOUT_MS,
  });
  built = new Map(
    stdout
      .trim()
      .split('\n')
      .map((line) => line.split(' ') as [string, string]),
  );
}, BUILD_TIMEOUT_MS);

describe('container images built with buildah', () => {
  it('prints one "<name> <archive>" line per image, each archive an OCI archive on disk', () => {
    expect([...built.keys()].map((n) => n.replace(/:.*/, ''))).toEqual([
      'localhost/vmsnap/vmsnap',
      'localhost/vmsnap/vm',
      'localhost/vmsnap/vm-guest',
    ]);
    for (const archive of built.values()) expect(fs.statSync(archive).size).toBeGreaterThan(1 << 20);
  });

  it('runtime: the agent CLI answers --help and the native addon loads', async () => {
    const image = byRepo('localhost/vmsnap/vmsnap');
    expect(await runIn(image, ['node', 'dist/agent/src/cli/main.js', '--help'])).toMatch(/usage:/);
    expect(await runIn(image, ['bin/vmsnap-agent', '--help'])).toMatch(/usage:/);
    const loaded = await runIn(image, ['node', '-e', 'console.log(typeof require("/app/agent/native/build/Release/vmsnap_native.node").sendFds)']);
    expect(loaded.trim()).toBe('function');
    await runIn(image, ['test', '-f', 'dist/operator/main.js']);
    expect(await config(image)).toMatchObject({ Entrypoint: ['/usr/bin/tini', '--'], Cmd: ['node', 'dist/operator/main.js'] });
  }, 120_000);

  it('vm: QEMU >= 9.1 and the launcher as the entry point, as user 10001', async () => {
    const image = byRepo('localhost/vmsnap/vm');
    const version = await runIn(image, ['qemu-system-x86_64', '--version']);
    const [, major, minor] = /version (\d+)\.(\d+)/.exec(version) ?? [];
    expect(Number(major) * 100 + Number(minor)).toBeGreaterThanOrEqual(901);
    await runIn(image, ['test', '-f', '/app/dist/agent/launcher/main.js']);
    expect(await config(image)).toMatchObject({
      Entrypoint: ['/usr/bin/tini', '--', 'node', '/app/dist/agent/launcher/main.js'],
      User: '10001',
    });
  }, 120_000);

  it('vm-guest: the vm image plus the test guest under /guest', async () => {
    const image = byRepo('localhost/vmsnap/vm-guest');
    const { guest, kernel, initrd } = await withRootOf(image, (root) => {
      const guest = JSON.parse(fs.readFileSync(path.join(root, 'guest/guest.json'), 'utf8')) as { kernel: string; initrd: string };
      return { guest, kernel: fs.statSync(path.join(root, guest.kernel)).size, initrd: fs.statSync(path.join(root, guest.initrd)).size };
    });
    expect(guest).toEqual({ kernel: '/guest/vmlinuz', initrd: '/guest/initrd.img' });
    expect(kernel).toBeGreaterThan(1 << 20);
    expect(initrd).toBeGreaterThan(64 << 10);
    await runIn(image, ['test', '-f', '/app/dist/agent/launcher/main.js']);
  }, 120_000);

  it('vm-guest: the guest boots under the image\'s QEMU as the image\'s user and fills its memory', async () => {
    const image = byRepo('localhost/vmsnap/vm-guest');
    // TCG: KVM guests can hang in early boot on these nested machines.
    const boot = [
      'qemu-system-x86_64 -accel tcg -m 256 -nodefaults -no-user-config -display none',
      '-kernel /guest/vmlinuz -initrd /guest/initrd.img',
      '-append "console=ttyS0 quiet panic=-1 vmsnap.fill_mib=16"',
      '-serial file:/tmp/serial.log -pidfile /tmp/qemu.pid -daemonize',
      '&& for i in $(seq 1 300); do grep -q "VMSNAP READY" /tmp/serial.log && break; sleep 0.5; done;',
      'kill "$(cat /tmp/qemu.pid)"; id -u; cat /tmp/serial.log',
    ].join(' ');
    const out = await runIn(image, ['sh', '-c', boot]);
    expect(out).toMatch(/^10001\n/);
    expect(out).toMatch(/VMSNAP READY fill_mib=16/);
  }, 240_000);
});
