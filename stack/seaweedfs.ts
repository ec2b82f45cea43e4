// A real S3 server for the repository suites, the bench and the demo: SeaweedFS's `weed server`
// with its S3 gateway, on loopback, with configured credentials (without them the gateway accepts
// anonymous requests), telemetry off. The binary comes from cluster/ensure-seaweedfs.sh (built
// once, cached by version). The demo's server outlives the demo (`detached`) and is stopped by
// stopDetachedSeaweedFS from its directory.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, ListBucketsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { repositoryClient, type RepositoryCredentials } from '../agent/src/objstore/client.js';
import { packageRoot } from '../agent/src/package-root.js';
import { poll } from '../kit/poll.js';

// From source or from dist/ (the repository bench runs it compiled).
const ROOT = packageRoot();

export function weedBinary(): string {
  const out = execFileSync('bash', [path.join(ROOT, 'cluster/ensure-seaweedfs.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').pop()!;
}

/** A port p with p+10000 (weed's gRPC port) also free, both below 65536. */
async function freePortPair(): Promise<number> {
  const tryPort = (p: number) =>
    new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  for (let i = 0; i < 200; i++) {
    const p = 20000 + Math.floor(Math.random() * 25000);
    if ((await tryPort(p)) && (await tryPort(p + 10000))) return p;
  }
  throw new Error('no free port pair for seaweedfs');
}

export interface S3Server {
  endpoint: string;
  credentials: RepositoryCredentials;
  dir: string;
  /** SIGKILL the server (a crash); start() brings it back on the same ports and data. */
  kill(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  createBucket(name: string): Promise<void>;
}

async function waitReady(endpoint: string, creds: RepositoryCredentials, child: ChildProcess, log: string): Promise<void> {
  const client = repositoryClient({ endpoint }, creds, { maxAttempts: 1 });
  let lastError = '';
  await poll(
    `the SeaweedFS S3 gateway at ${endpoint} (log ${log})`,
    async () => {
      if (child.exitCode !== null) throw new Error(`weed exited ${child.exitCode}; see ${log}`);
      try {
        const { Buckets } = await client.send(new ListBucketsCommand({}));
        // After a restart the gateway may answer before a volume is writable: a write proves it.
        for (const b of Buckets ?? []) await client.send(new PutObjectCommand({ Bucket: b.Name!, Key: '.ready-probe', Body: 'ok' }));
        return true;
      } catch (err) {
        lastError = String(err);
        return false;
      }
    },
    { timeoutMs: 120_000, intervalMs: 300, describe: () => lastError },
  );
}

/** What a detached server leaves in its directory, so another process can stop it. */
const STATE_FILE = 'server.json';
interface DetachedState {
  pid: number;
  ports: number[];
  endpoint: string;
}

/** weed leaves unix sockets for its gRPC ports in /tmp. */
function removeSockets(ports: number[]): void {
  for (const f of readdirSync('/tmp')) {
    if (/^seaweedfs-.*\.sock$/.test(f) && ports.some((p) => f.includes(String(p)) || f.includes(String(p + 10000)))) rmSync(path.join('/tmp', f), { force: true });
  }
}

/** Stops the detached server whose directory is `dir` (if it runs) and removes its data. */
export async function stopDetachedSeaweedFS(dir: string): Promise<void> {
  const stateFile = path.join(dir, STATE_FILE);
  if (!existsSync(stateFile)) return rmSync(dir, { recursive: true, force: true });
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as DetachedState;
  const ours = () => {
    try {
      return readFileSync(`/proc/${state.pid}/cmdline`, 'utf8').includes(`-dir=${path.join(dir, 'data')}`);
    } catch {
      return false;
    }
  };
  if (ours()) {
    process.kill(state.pid, 'SIGTERM');
    await poll('weed to exit after SIGTERM', () => !ours(), { timeoutMs: 10_000, intervalMs: 100 }).catch(() => process.kill(state.pid, 'SIGKILL'));
  }
  removeSockets(state.ports);
  rmSync(dir, { recursive: true, force: true });
}

export async function startSeaweedFS(opts: { dir?: string; detached?: boolean } = {}): Promise<S3Server> {
  const weed = weedBinary();
  const dir = opts.dir ?? mkdtempSync(path.join(os.tmpdir(), 'vmsnap-s3-'));
  mkdirSync(path.join(dir, 'data'), { recursive: true, mode: 0o700 });
  // The repository's identity may read and write objects but not administer (create buckets);
  // a separate admin identity sets buckets up, as an operator of a real store would.
  const credentials = { accessKeyId: 'vmsnap' + randomBytes(4).toString('hex'), secretAccessKey: randomBytes(20).toString('hex') };
  const admin = { accessKeyId: 'admin' + randomBytes(4).toString('hex'), secretAccessKey: randomBytes(20).toString('hex') };
  const config = path.join(dir, 's3.json');
  writeFileSync(
    config,
    JSON.stringify({
      identities: [
        { name: 'vmsnap', credentials: [{ accessKey: credentials.accessKeyId, secretKey: credentials.secretAccessKey }], actions: ['Read', 'Write', 'List', 'Tagging'] },
        { name: 'admin', credentials: [{ accessKey: admin.accessKeyId, secretKey: admin.secretAccessKey }], actions: ['Admin', 'Read', 'Write', 'List', 'Tagging'] },
      ],
    }),
    { mode: 0o600 },
  );
  const [s3, master, volume, filer] = [await freePortPair(), await freePortPair(), await freePortPair(), await freePortPair()];
  const endpoint = `http://127.0.0.1:${s3}`;
  const log = path.join(dir, 'weed.log');
  let child: ChildProcess | undefined;
  const server: S3Server = {
    endpoint,
    credentials,
    dir,
    async start() {
      const out = openSync(log, 'a');
      child = spawn(
        weed,
        [
          'server',
          '-ip=127.0.0.1',
          '-ip.bind=127.0.0.1',
          `-dir=${path.join(dir, 'data')}`,
          '-s3',
          `-s3.port=${s3}`,
          `-s3.config=${config}`,
          `-master.port=${master}`,
          `-volume.port=${volume}`,
          `-filer.port=${filer}`,
          '-master.volumeSizeLimitMB=1024',
          '-volume.max=0',
          // Telemetry off, and its URL pointed at a closed loopback port should a default change.
          '-master.telemetry=false',
          '-master.telemetry.url=http://127.0.0.1:9/',
        ],
        { stdio: ['ignore', out, out], cwd: dir, detached: !!opts.detached },
      );
      closeSync(out);
      if (opts.detached) {
        child.unref();
        const state: DetachedState = { pid: child.pid!, ports: [s3, master, volume, filer], endpoint };
        writeFileSync(path.join(dir, STATE_FILE), JSON.stringify(state));
      }
      await waitReady(endpoint, credentials, child, log);
    },
    async kill() {
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child && child.exitCode === null) {
        const exited = new Promise((r) => child!.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child?.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      removeSockets([s3, master, volume, filer]);
      rmSync(dir, { recursive: true, force: true });
    },
    async createBucket(name: string) {
      const client = repositoryClient({ endpoint }, admin);
      let lastError: unknown;
      await poll(
        `bucket ${name} to be created`,
        async () => {
          try {
            await client.send(new CreateBucketCommand({ Bucket: name }));
            return true;
          } catch (err) {
            const code = (err as { name?: string }).name;
            if (code === 'BucketAlreadyOwnedByYou' || code === 'BucketAlreadyExists') return true;
            lastError = err;
            return false;
          }
        },
        { timeoutMs: 60_000, intervalMs: 500, describe: () => String(lastError) },
      );
    },
  };
  await server.start();
  return server;
}
