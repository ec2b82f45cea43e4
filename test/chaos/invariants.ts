// What must hold after any fault, once the system has recovered: nothing left
// InProgress, no VM paused or half-loaded, every file that says "complete"
// verifies, every Succeeded snapshot has such a file, no file without a
// Succeeded snapshot, and guest memory intact. Returns the violations found.
import fs from 'node:fs';
import path from 'node:path';
import { AGENT_PRIVATE_DIR } from '../../agent/src/engine/private-files.js';
import { processAlive } from '../../agent/src/daemon/qemu-control.js';
import { QmpClient } from '../../agent/src/qmp/client.js';
import { readHeader } from '../../agent/src/snapshot-file/read.js';
import { verifySnapshotFile } from '../../agent/src/snapshot-file/verify.js';
import { kubectlOk } from '../../stack/controlplane.js';
import { qemuPidsMentioning } from '../../kit/qemu.js';

export interface Scope {
  namespace: string;
  vmRoot: string;
  storageRoot: string;
}

interface Obj {
  kind: string;
  metadata: { name: string; deletionTimestamp?: string };
  status?: { phase?: string; conditions?: Array<{ type: string; status: string }>; readyToUse?: boolean; file?: { path?: string }; error?: { message?: string } };
}

export async function listWork(namespace: string): Promise<Obj[]> {
  return (JSON.parse(await kubectlOk(['get', 'vmsnapshots,vmrestores', '-n', namespace, '-o', 'json'])) as { items: Obj[] }).items;
}

/** Files under a directory, except in an agent's own directory (its key, ledger and logs, not snapshots). */
export function snapshotFilesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && !path.relative(dir, e.parentPath).split(path.sep).includes(AGENT_PRIVATE_DIR))
    .map((e) => path.join(e.parentPath, e.name));
}

/** Live (not zombie) QEMU processes whose QMP socket is `<dir>/qmp.sock`. */
export function qemuPidsFor(dir: string): number[] {
  return qemuPidsMentioning(path.join(dir, 'qmp.sock')).filter((pid) => processAlive(pid));
}

/** QEMU's run state at `socket`, 'absent' when nobody listens, 'silent' when it does not answer. */
export async function vmStatus(socket: string, timeoutMs = 5000): Promise<string> {
  if (!fs.existsSync(socket)) return 'absent';
  let client: QmpClient;
  try {
    client = await QmpClient.connect(socket, { timeoutMs });
  } catch (err) {
    return /nothing listens|ECONNREFUSED|ENOENT/.test((err as Error).message) ? 'absent' : 'silent';
  }
  try {
    return (await client.execute<{ status: string }>('query-status')).status;
  } catch {
    return 'silent';
  } finally {
    client.close();
  }
}

export async function checkInvariants(scope: Scope): Promise<string[]> {
  const violations: string[] = [];
  const work = await listWork(scope.namespace);
  const succeededFiles = new Set<string>();
  for (const o of work) {
    const id = `${o.kind} ${o.metadata.name}`;
    const phase = o.status?.phase;
    if (phase !== 'Succeeded' && phase !== 'Failed') violations.push(`${id} is ${phase ?? 'without a phase'}`);
    // A terminal phase is final and says one thing: no success carrying an earlier failure's error.
    const ready = o.status?.conditions?.find((c) => c.type === 'Ready')?.status;
    if (phase === 'Succeeded' && (o.status?.error || ready !== 'True')) violations.push(`${id} Succeeded with Ready ${ready} and error ${JSON.stringify(o.status?.error)}`);
    if (phase === 'Failed' && (!o.status?.error?.message || ready !== 'False')) violations.push(`${id} Failed without an error message or with Ready ${ready}`);
    if (o.kind !== 'VMSnapshot') continue;
    const file = o.status?.file?.path;
    if (phase === 'Succeeded') {
      if (!file || !fs.existsSync(file)) {
        if (!o.metadata.deletionTimestamp) violations.push(`${id} Succeeded but its file ${file} is missing`);
        continue;
      }
      succeededFiles.add(file);
      if (!o.status?.readyToUse) violations.push(`${id} Succeeded but is not readyToUse`);
      try {
        verifySnapshotFile(file);
      } catch (err) {
        violations.push(`${id} Succeeded but its file does not verify: ${(err as Error).message}`);
      }
    } else if (phase === 'Failed' && file && fs.existsSync(file)) {
      violations.push(`${id} Failed (${o.status?.error?.message}) but left its file ${file}`);
    }
  }

  for (const file of snapshotFilesUnder(scope.storageRoot)) {
    if (succeededFiles.has(file)) continue;
    let state: string;
    try {
      state = readHeader(file).state;
    } catch (err) {
      state = `unreadable (${(err as Error).message})`;
    }
    if (state === 'complete') {
      try {
        verifySnapshotFile(file);
      } catch (err) {
        violations.push(`${file} says complete but does not verify: ${(err as Error).message}`);
      }
    }
    violations.push(`orphaned file ${file} (header ${state}) belongs to no Succeeded VMSnapshot`);
  }

  const vmsDir = path.join(scope.vmRoot, scope.namespace);
  for (const vm of fs.existsSync(vmsDir) ? fs.readdirSync(vmsDir) : []) {
    const dir = path.join(vmsDir, vm);
    const status = await vmStatus(path.join(dir, 'qmp.sock'));
    if (status !== 'running' && status !== 'absent') violations.push(`VM ${vm} is '${status}', not running`);
    const pids = qemuPidsFor(dir);
    if (pids.length > 1) violations.push(`VM ${vm} has ${pids.length} QEMU processes (${pids.join(', ')}): one is orphaned`);
    if (status === 'absent' && pids.length > 0) violations.push(`VM ${vm} has QEMU ${pids.join(', ')} without a listening QMP socket`);
    const serial = path.join(dir, 'serial.log');
    const bad = fs.existsSync(serial) ? /VMSNAP BAD[^\r\n]*/.exec(fs.readFileSync(serial, 'latin1')) : null;
    if (bad) violations.push(`VM ${vm}: guest memory damaged: ${bad[0]}`);
  }
  return violations;
}
