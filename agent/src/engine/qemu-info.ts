// What the engine learns about the QEMU on the other end of a QMP socket.
import fs from 'node:fs';
import { formatQemuVersion, type QmpClient } from '../qmp/client.js';
import { processIdentity, readPeerProcess } from '../vm/process-identity.js';

export interface QemuProcessInfo {
  pid: number;
  /** With pid, the process's identity (a recycled pid starts later): see vm/process-identity.ts. */
  startTicks: number;
  argv: string[];
  cwd?: string;
}

export interface QemuVmInfo {
  version: string;
  machine: string;
  ramBytes: number;
  mainBlockId?: string;
  status: string;
  running: boolean;
  process: QemuProcessInfo;
}

/** Reads argv and cwd of the QEMU process behind the socket (SO_PEERCRED pid, then /proc of that very process). */
export function qemuProcess(client: QmpClient): QemuProcessInfo {
  const { pid } = client.peerCredentials();
  return readPeerProcess(client.socketFd(), pid, (p) => {
    const identity = processIdentity(p);
    if (!identity) throw new Error(`the QEMU process (pid ${p}) has exited`);
    const raw = fs.readFileSync(`/proc/${p}/cmdline`);
    const argv = raw.toString('utf8').split('\0');
    if (argv[argv.length - 1] === '') argv.pop();
    let cwd: string | undefined;
    try {
      cwd = fs.readlinkSync(`/proc/${p}/cwd`);
    } catch {
      cwd = undefined;
    }
    return { pid: p, startTicks: identity.startTicks, argv, cwd };
  });
}

export async function queryStatus(client: QmpClient): Promise<{ status: string; running: boolean }> {
  const r = await client.execute<{ status: string; running: boolean }>('query-status');
  return { status: r.status, running: r.running };
}

/** The versioned machine type, e.g. pc-i440fx-10.0 (what `-machine pc` resolves to). */
export async function queryMachine(client: QmpClient): Promise<string> {
  const type = await client.execute<string>('qom-get', { path: '/machine', property: 'type' });
  return type.replace(/-machine$/, '');
}

export async function queryRamBytes(client: QmpClient): Promise<number> {
  const memory = await client.execute<{ 'base-memory': number; 'plugged-memory'?: number }>('query-memory-size-summary');
  return memory['base-memory'] + (memory['plugged-memory'] ?? 0);
}

export async function queryVmInfo(client: QmpClient): Promise<QemuVmInfo> {
  const [status, machine, ramBytes, machines] = await Promise.all([
    queryStatus(client),
    queryMachine(client),
    queryRamBytes(client),
    client.execute<Array<{ name: string; alias?: string; 'default-ram-id'?: string }>>('query-machines'),
  ]);
  const entry = machines.find((m) => m.name === machine);
  const process = qemuProcess(client);
  return {
    version: formatQemuVersion(client.version),
    machine,
    ramBytes,
    mainBlockId: mainRamBlockId(process.argv, entry?.['default-ram-id']),
    status: status.status,
    running: status.running,
    process,
  };
}

/** With -machine memory-backend=ID the main RAM block is named ID; otherwise the machine's default id. */
export function mainRamBlockId(argv: string[], defaultRamId: string | undefined): string | undefined {
  for (let i = 0; i < argv.length - 1; i++) {
    if (argv[i] === '-machine' || argv[i] === '-M') {
      const m = /(?:^|,)memory-backend=([^,]+)/.exec(argv[i + 1]!);
      if (m) return m[1];
    }
  }
  return defaultRamId;
}
