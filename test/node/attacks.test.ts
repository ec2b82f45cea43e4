// Tenant attacks on the real node: a tenant's ways to make the root agent run, open or delete what
// it names, through VM pods. The tenant is a ServiceAccount with only the built-in `edit`
// ClusterRole in its namespace: it creates its own VM
// pods (and execs into them), VMSnapshots and VMRestores, with its own token. The victim is a VM
// pod in another namespace and a host directory outside any pod. Each attack must fail, the
// victim's QEMU keeps its pid and its guest keeps verifying its memory, and the host directory
// (checked here as root on the node's host) never changes: nothing appears in it, the canary file
// keeps its bytes and mtime.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { API_VERSION, VM_RUN_MOUNT, VM_RUN_VOLUME, type VMRestoreSpecInput } from '../../api/index.js';
import { FIXED_BYTES } from '../../agent/src/snapshot-file/header.js';
import {
  buildAndLoadImages,
  describeRelease,
  ensureNamespace,
  installRelease,
  uninstallRelease,
  type Release,
  type VmsnapImages,
} from '../../stack/product.js';
import { createTenant, type Tenant } from './tenant.js';
import { ensureNodeCluster, nodeKubectl, nodeKubectlOk, type NodeCluster } from '../../stack/node-cluster.js';
import { createVmPod, inPod, qemuPidsOfPod, VM_UID, vmLog, vmPodManifest, type VmPodOptions } from '../../stack/vm-pod.js';
import { guestChecks } from '../../kit/guest.js';
import { pidsWithCmdline, processUids } from './proc.js';
import { sleep } from '../../kit/poll.js';
import { procArgv } from '../../kit/qemu.js';
import { finished, getAsAdmin, until } from './phase.js';
import { vmRestore, vmSnapshot } from '../../kit/manifests.js';

const suffix = randomBytes(3).toString('hex');
const tenantNs = `tenant-${suffix}`;
const victimNs = `victim-${suffix}`;
const VICTIM = 'victim';
/** The host directory the attacks aim at: outside any pod, created here as root. */
const hostDir = path.join(os.tmpdir() === '/tmp' ? '/tmp' : os.tmpdir(), `vmsnap-attacks-${suffix}`);
const canaryFile = path.join(hostDir, 'canary');
const CANARY_TEXT = `vmsnap attack canary ${suffix}\n`;
/** The same directory as the agent (hostPID) reaches the host's root through pid 1. */
const viaProc1 = (p: string) => `/proc/1/root${p}`;
const testDir = path.join(process.env.VMSNAP_TEST_DIR ?? os.tmpdir(), `vmsnap-attacks-test-${suffix}`);

/** The agent's stallTimeoutSeconds in this release (the product default is 60). */
const STALL_SECONDS = 30;

let cp: NodeCluster;
let images: VmsnapImages;
let release: Release;
let tenant: Tenant;
let victimUid: string;
let canaryStat: fs.Stats;


async function expectPhase(resource: string, namespace: string, phase: 'Succeeded' | 'Failed', timeoutMs?: number): Promise<Record<string, any>> {
  const o = await finished(resource, namespace, { expected: phase, timeoutMs, context: () => describeRelease(release.namespace) });
  note(`${namespace}/${resource}`, o);
  return o;
}

/** What an attack ended with, for the run's log: the suite proves refusals, this shows their words. */
const outcomes: string[] = [];
function note(what: string, o: Record<string, any>): void {
  const failed = (o.status?.conditions ?? []).find((c: any) => c.status === 'False' || c.type === 'Failed' || c.type === 'Succeeded');
  outcomes.push(`${what}: ${o.status?.phase ?? 'no phase'}${failed ? ` (${failed.reason}: ${String(failed.message).slice(0, 400)})` : ''}`);
}

/** Everything a Failed object says about why (phase, conditions and their messages). */
const why = (o: Record<string, any>) => JSON.stringify(o.status ?? {});

function snapshotJson(namespace: string, name: string, vmName: string): string {
  return JSON.stringify(vmSnapshot({ name, namespace }, { vmName }));
}

function restoreJson(namespace: string, name: string, snapshotName: string, extra: Partial<VMRestoreSpecInput> = {}): string {
  return JSON.stringify(vmRestore({ name, namespace }, { snapshotName, ifRunning: 'Replace', ...extra }));
}

// --- the victim -------------------------------------------------------------------------------

function victimQemu(): number {
  const pids = qemuPidsOfPod(victimUid);
  if (pids.length !== 1) throw new Error(`expected one QEMU in the victim pod, found ${JSON.stringify(pids)}`);
  return pids[0]!;
}

async function expectGuestVerifying(namespace: string, pod: string, before?: number): Promise<void> {
  const from = before ?? guestChecks(await vmLog(namespace, pod)).passCount;
  await until(`the guest of ${namespace}/${pod} to pass two more memory checks`, async () => {
    const checks = guestChecks(await vmLog(namespace, pod));
    if (checks.bad.length > 0) throw new Error(`guest memory of ${namespace}/${pod} damaged: ${checks.bad[0]}`);
    return checks.passCount >= from + 2 ? true : undefined;
  }, 120_000);
}

/** The victim runs on: same QEMU process, memory still verifying. */
async function expectVictimIntact(qemuPid: number): Promise<void> {
  expect(victimQemu()).toBe(qemuPid);
  await expectGuestVerifying(victimNs, VICTIM);
  expect(victimQemu()).toBe(qemuPid);
}

/** name -> size/mtime of the files of a namespace under the storage root. */
function storageListing(namespace: string): Record<string, string> {
  const dir = path.join(release.storageRoot, namespace);
  const out: Record<string, string> = {};
  if (!fs.existsSync(dir)) return out;
  for (const name of fs.readdirSync(dir)) {
    const st = fs.lstatSync(path.join(dir, name));
    out[name] = `${st.size}/${st.mtimeMs}`;
  }
  return out;
}

// --- the host ---------------------------------------------------------------------------------

/** Nothing appeared in the host directory and the canary kept its bytes and mtime. */
function expectHostUntouched(): void {
  expect(fs.readdirSync(hostDir).sort()).toEqual(['canary']);
  const st = fs.lstatSync(canaryFile);
  expect(st.isFile()).toBe(true);
  expect(fs.readFileSync(canaryFile, 'utf8')).toBe(CANARY_TEXT);
  expect(st.mtimeMs).toBe(canaryStat.mtimeMs);
  expect(st.ino).toBe(canaryStat.ino);
}

// --- the tenant's pods ------------------------------------------------------------------------

interface TenantVm {
  name: string;
  uid: string;
}

/** The tenant creates a VM pod with its own token and waits until the agent lists it. */
async function tenantVmPod(name: string, opts: Partial<VmPodOptions> & { edit?: (pod: Record<string, any>) => void } = {}): Promise<TenantVm> {
  const manifest = vmPodManifest({ namespace: tenantNs, name, image: images.guest, memMiB: 128, fillMiB: 16, seed: 3, ...opts });
  opts.edit?.(manifest);
  await tenant.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(manifest) });
  const waited = await tenant.kubectl(['wait', '--for=condition=Ready', `pod/${name}`, '-n', tenantNs, '--timeout=120s'], { timeoutMs: 150_000 });
  if (waited.code !== 0) {
    const log = await nodeKubectl(['logs', name, '-n', tenantNs, '-c', 'vm', '--tail=40']);
    throw new Error(`tenant pod ${name} not Ready: ${waited.stderr}\n${log.stdout}${log.stderr}`);
  }
  const uid = (await tenant.kubectlOk(['get', 'pod', name, '-o', 'jsonpath={.metadata.uid}'])).trim();
  await until(`the agent to report ${tenantNs}/${name} as running`, async () => {
    const inv = await nodeKubectl(['get', 'vminventory', cp.nodeName, '-o', 'json']);
    if (inv.code !== 0) return undefined;
    const vms = (JSON.parse(inv.stdout).status?.vms ?? []) as any[];
    return vms.some((v) => v.namespace === tenantNs && v.name === name && v.state === 'running') ? true : undefined;
  });
  return { name, uid };
}

/** A shell command run by the tenant in its own VM pod (`edit` includes pods/exec). */
async function tenantExec(pod: string, script: string): Promise<string> {
  return tenant.kubectlOk(['exec', pod, '-c', 'vm', '--', 'bash', '-c', script]);
}

async function deleteTenantPod(name: string): Promise<void> {
  await tenant.kubectl(['delete', 'pod', name, '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
}

/** Every QEMU of the pod runs as the pod's user (never root) and lives in the pod's cgroup. */
function expectQemuConfined(vm: TenantVm, marker: string): number[] {
  const pids = qemuPidsOfPod(vm.uid);
  expect(pids.length).toBeGreaterThan(0);
  for (const pid of pids) expect(processUids(pid)).toEqual([VM_UID, VM_UID, VM_UID, VM_UID]);
  // Anything on the host running the tenant's command line (its unique marker) is in its pod, as its user.
  for (const pid of pidsWithCmdline(marker)) {
    const uids = processUids(pid);
    if (uids === undefined) continue; // exited meanwhile
    expect({ pid, inPod: inPod(pid, vm.uid) }).toEqual({ pid, inPod: true });
    expect({ pid, uids }).toEqual({ pid, uids: [VM_UID, VM_UID, VM_UID, VM_UID] });
  }
  return pids;
}

beforeAll(async () => {
  cp = await ensureNodeCluster();
  images = await buildAndLoadImages(cp);
  const base = 20000 + Math.floor(Math.random() * 20000);
  release = await installRelease(cp, images, {
    namespace: `vmsnap-${suffix}`,
    storageRoot: path.join(testDir, 'snapshots'),
    ports: { metrics: base, operatorProbes: base + 1, agentProbes: base + 2 },
    // Short enough that the held saves below end within the test, long enough for every honest save and restore here.
    values: { 'agent.stallTimeoutSeconds': String(STALL_SECONDS) },
  });
  fs.mkdirSync(hostDir, { recursive: true, mode: 0o755 });
  fs.writeFileSync(canaryFile, CANARY_TEXT, { mode: 0o644 });
  canaryStat = fs.lstatSync(canaryFile);

  await ensureNamespace(victimNs, 'restricted');
  victimUid = await createVmPod({ namespace: victimNs, name: VICTIM, image: images.guest, memMiB: 256, fillMiB: 96, seed: 11 });
  tenant = await createTenant(cp, tenantNs, testDir);
  // The chart's roles are folded into `edit` by the aggregation controller: wait until they are.
  await until('the tenant to be allowed VMSnapshots', async () =>
    (await tenant.kubectl(['auth', 'can-i', 'create', 'vmsnapshots.vmsnap.io'])).stdout.trim() === 'yes' ? true : undefined,
  );
  await expectGuestVerifying(victimNs, VICTIM, 0);
  await until('the agent to report the victim VM', async () => {
    const inv = await nodeKubectl(['get', 'vminventory', cp.nodeName, '-o', 'json']);
    if (inv.code !== 0) return undefined;
    return ((JSON.parse(inv.stdout).status?.vms ?? []) as any[]).some((v) => v.namespace === victimNs && v.name === VICTIM && v.state === 'running') ? true : undefined;
  });
  // The victim's owner keeps a snapshot (path 4 checks nobody adds to it; path 6 borrows its header).
  await nodeKubectlOk(['apply', '-f', '-'], { input: snapshotJson(victimNs, 'victim-base', VICTIM) });
  await expectPhase('vmsnapshot/victim-base', victimNs, 'Succeeded');
}, 60 * 60 * 1000);

afterAll(async () => {
  if (outcomes.length > 0) process.stderr.write(`attack outcomes:\n  ${outcomes.join('\n  ')}\n`);
  if (!cp) return;
  // The agent removes the snapshots' finalizers: they go before the release does.
  for (const ns of [tenantNs, victimNs]) {
    await nodeKubectl(['delete', 'vmsnapshots,vmrestores', '--all', '-n', ns, '--wait=true', '--timeout=120s'], { timeoutMs: 150_000 });
  }
  for (const ns of [tenantNs, victimNs]) await nodeKubectl(['delete', 'namespace', ns, '--wait=false']);
  if (release) {
    await uninstallRelease(cp, release);
    await nodeKubectl(['delete', 'namespace', release.namespace, '--wait=false']);
  }
  fs.rmSync(hostDir, { recursive: true, force: true });
  fs.rmSync(testDir, { recursive: true, force: true }); // the tenant's token and the storage root
}, 600_000);

// Path 1: the pod's command line starts with the tenant's script, and QEMU's argv[0] names a script
// in its run volume (set with `exec -a`): an agent that executes a recorded
// command line would run it as root on the host.
const P1 = 'evil';
const p1Marker = `vmsnap-evil-${suffix}`;
const evilScript = [
  'set -e',
  `cat > ${VM_RUN_MOUNT}/evil.sh <<'EOF'`,
  '#!/bin/sh',
  `mkdir -p ${hostDir} && touch ${hostDir}/pwned-path1 && echo pwned >> ${canaryFile} || true`,
  `touch ${viaProc1(`${hostDir}/pwned-path1-proc1`)} || true`,
  `touch /tmp/pwned-${suffix} || true`,
  'EOF',
  `chmod 755 ${VM_RUN_MOUNT}/evil.sh`,
  // Run inside the pod: the tenant's own business (its container's files).
  `${VM_RUN_MOUNT}/evil.sh`,
  `exec -a ${VM_RUN_MOUNT}/evil.sh "$@"`,
].join('\n');
let p1: TenantVm;

describe('path 1: a command line that is a script', () => {
  test('save and restore through the API run nothing on the host; QEMU stays in the pod as its user', async () => {
    const victimPid = victimQemu();
    p1 = await tenantVmPod(P1, { vmName: P1, args: (qemu) => ['bash', '-c', evilScript, p1Marker, ...qemu] });
    await expectGuestVerifying(tenantNs, P1, 0);
    // The attack is real: QEMU's argv[0] is the script.
    const [qemuPid] = expectQemuConfined(p1, p1Marker);
    expect(procArgv(qemuPid!)?.[0]).toBe(`${VM_RUN_MOUNT}/evil.sh`);

    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, 'p1-snap', P1) });
    await expectPhase('vmsnapshot/p1-snap', tenantNs, 'Succeeded');
    const passes = guestChecks(await vmLog(tenantNs, P1)).passCount;
    await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, 'p1-restore', 'p1-snap') });
    await expectPhase('vmrestore/p1-restore', tenantNs, 'Succeeded');
    await expectGuestVerifying(tenantNs, P1, passes);

    const after = expectQemuConfined(p1, p1Marker);
    expect(after).not.toContain(qemuPid); // restarted by the launcher, inside the pod
    const argv = procArgv(after[0]!) ?? [];
    expect(argv).toContain('defer');
    expect(argv[argv.indexOf('-sandbox') + 1]).toMatch(/spawn=deny/);
    // Nothing of the agent's container reached the restarted QEMU: its environment is the pod's, not the agent's.
    const environ = fs.readFileSync(`/proc/${after[0]}/environ`, 'utf8');
    expect(environ).not.toMatch(/VMSNAP_AGENT_CONFIG|VMSNAP_STORAGE_ROOT|VMSNAP_KUBELET_ROOT_DIR|NODE_NAME=/);
    expect(fs.existsSync(`/tmp/pwned-${suffix}`)).toBe(false);
    expectHostUntouched();
    expect(victimQemu()).toBe(victimPid);
  }, 900_000);
});

// Path 3: symlinks planted where the agent might open a log or a companion file.
describe('path 3: symlinks in the run volume', () => {
  const links: Array<[string, string]> = [
    ['qmp.sock.qemu.log', viaProc1(`${hostDir}/created-qmp.sock.qemu.log`)],
    ['launcher.sock.qemu.log', viaProc1(`${hostDir}/created-launcher.sock.qemu.log`)],
    [`${tenantNs}_${P1}.qemu.log`, viaProc1(`${hostDir}/created-ns-log`)],
    ['qemu.log', viaProc1(canaryFile)],
    ['launcher.log', canaryFile],
    ['vmsnap.log', `${hostDir}/created-vmsnap.log`],
    ['qmp.sock.lock', viaProc1(`${hostDir}/created-lock`)],
    ['snapshot.vms', viaProc1(`${hostDir}/created-snapshot.vms`)],
    ['digests', viaProc1(`${hostDir}/created-digests`)],
    ['ram', viaProc1(`${hostDir}/created-ram`)],
  ];

  test('a save and a restore never create or change the files the links name', async () => {
    const victimPid = victimQemu();
    await tenantExec(P1, links.map(([name, target]) => `ln -sfn '${target}' '${VM_RUN_MOUNT}/${name}'`).join(' && '));
    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, 'p3-snap', P1) });
    await expectPhase('vmsnapshot/p3-snap', tenantNs, 'Succeeded');
    await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, 'p3-restore', 'p3-snap') });
    await expectPhase('vmrestore/p3-restore', tenantNs, 'Succeeded');
    await expectGuestVerifying(tenantNs, P1);
    const listed = await tenantExec(P1, `ls -l ${VM_RUN_MOUNT}`);
    for (const [name, target] of links) expect(listed).toContain(`${name} -> ${target}`);
    expectHostUntouched();
    expect(victimQemu()).toBe(victimPid);
  }, 900_000);
});

// Path 6: the header is trusted only when this agent wrote it for this VMSnapshot.
describe('path 6: snapshot headers and other namespaces', () => {
  test("a tenant cannot restore another namespace's VMSnapshot", async () => {
    const victimPid = victimQemu();
    const victimFiles = storageListing(victimNs);
    const inVictimNs = await tenant.kubectl(['apply', '-f', '-'], { input: restoreJson(victimNs, 'steal', 'victim-base') });
    expect(inVictimNs.code).not.toBe(0);
    expect(inVictimNs.stderr).toMatch(/forbidden/i);
    const qualified = await tenant.kubectl(['apply', '-f', '-'], { input: restoreJson(tenantNs, 'qualified', `${victimNs}/victim-base`) });
    expect(qualified.code).not.toBe(0);
    // By name in its own namespace: no such VMSnapshot there, so it waits and never runs.
    await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, 'by-name', 'victim-base') });
    // Into the victim's VM name: it resolves in the tenant's namespace, never the victim's (a copy
    // there runs in a new pod of the tenant's own namespace).
    await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, 'into-victim', 'p1-snap', { targetVMName: VICTIM }) });
    await sleep(15_000);
    const byName = await getAsAdmin('vmrestore/by-name', tenantNs);
    expect(byName.status?.phase ?? 'Pending').toBe('Pending');
    expect(why(byName)).toMatch(/SnapshotNotFound/);
    const into = await getAsAdmin('vmrestore/into-victim', tenantNs);
    note(`${tenantNs}/vmrestore/by-name`, byName);
    note(`${tenantNs}/vmrestore/into-victim`, into);
    if (into.status?.phase === 'Succeeded') {
      const made = await getAsAdmin(`pod/${VICTIM}`, tenantNs);
      expect(made.metadata.labels?.['vmsnap.io/restore-pod']).toBe('true');
      expect(made.metadata.uid).toBe(into.status.pod?.uid);
      await deleteTenantPod(VICTIM);
    }
    await expectVictimIntact(victimPid);
    expect(storageListing(victimNs)).toEqual(victimFiles);
  }, 900_000);

  /** The tenant's own finished snapshot, as the tenant's QEMU (holding a writable fd) could rewrite it. */
  async function tamperedRestore(name: string, tamper: (file: string) => void, extra: Record<string, unknown> = {}): Promise<Record<string, any>> {
    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, `${name}-snap`, P1) });
    const snap = await expectPhase(`vmsnapshot/${name}-snap`, tenantNs, 'Succeeded');
    const file = snap.status.file.path as string;
    expect(file.startsWith(path.join(release.storageRoot, tenantNs) + path.sep)).toBe(true);
    tamper(file);
    const before = qemuPidsOfPod(p1.uid);
    const passes = guestChecks(await vmLog(tenantNs, P1)).passCount;
    await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, `${name}-restore`, `${name}-snap`, extra) });
    const failed = await expectPhase(`vmrestore/${name}-restore`, tenantNs, 'Failed');
    // Refused before the VM was touched: the same QEMU runs on, not paused.
    expect(qemuPidsOfPod(p1.uid)).toEqual(before);
    await expectGuestVerifying(tenantNs, P1, passes);
    return failed;
  }

  const patchFile = (file: string, offset: number, bytes: Buffer) => {
    const fd = fs.openSync(file, 'r+');
    try {
      fs.writeSync(fd, bytes, 0, bytes.length, offset);
    } finally {
      fs.closeSync(fd);
    }
  };
  const readHead = (file: string, length: number) => {
    const buf = Buffer.alloc(length);
    const fd = fs.openSync(file, 'r');
    try {
      fs.readSync(fd, buf, 0, length, 0);
    } finally {
      fs.closeSync(fd);
    }
    return buf;
  };

  test('a flipped byte in the header fails the restore with a clear error; the VM runs on', async () => {
    const failed = await tamperedRestore('p6-flip', (file) => {
      const b = readHead(file, FIXED_BYTES + 16);
      patchFile(file, FIXED_BYTES + 10, Buffer.from([b[FIXED_BYTES + 10]! ^ 0x01]));
    });
    expect(why(failed)).toMatch(/header/);
  }, 900_000);

  /** Same length, still valid JSON, a valid CRC: the metadata says another namespace now. */
  const forgeHeader = (file: string) => {
    const head = readHead(file, 4096);
    const length = head.readUInt32LE(24);
    const json = head.subarray(FIXED_BYTES, FIXED_BYTES + length).toString('utf8');
    const forged = Buffer.from(json.replaceAll(`"${tenantNs}"`, `"${victimNs}"`));
    expect(forged.length).toBe(length);
    expect(forged.toString()).not.toBe(json);
    JSON.parse(forged.toString());
    const crc = Buffer.alloc(4);
    crc.writeUInt32LE(crc32(forged, crc32(Buffer.from(head.subarray(0, 28)))));
    patchFile(file, FIXED_BYTES, forged);
    patchFile(file, 28, crc);
  };

  test('a forged header with a valid checksum fails a Lazy restore too (the snapshot fd is never handed over)', async () => {
    const failed = await tamperedRestore('p6-lazy', forgeHeader, { restoreMode: 'Lazy' });
    expect(why(failed)).toMatch(/MAC|did not write/);
  }, 900_000);

  test('a rewritten header with a valid checksum (what a tenant QEMU could write) fails on its MAC', async () => {
    const failed = await tamperedRestore('p6-rewrite', (file) => {
      const head = readHead(file, 4096);
      const length = head.readUInt32LE(24);
      const json = head.subarray(FIXED_BYTES, FIXED_BYTES + length).toString('utf8');
      // Same length, still valid JSON: the metadata says another namespace now.
      const forged = Buffer.from(json.replaceAll(`"${tenantNs}"`, `"${victimNs.slice(0, tenantNs.length).padEnd(tenantNs.length, 'x')}"`));
      expect(forged.length).toBe(length);
      expect(forged.toString()).not.toBe(json);
      JSON.parse(forged.toString());
      const fixed = Buffer.from(head.subarray(0, 28));
      const crc = Buffer.alloc(4);
      crc.writeUInt32LE(crc32(forged, crc32(fixed)));
      patchFile(file, FIXED_BYTES, forged);
      patchFile(file, 28, crc);
    });
    expect(why(failed)).toMatch(/MAC|did not write/);
  }, 900_000);

  test("the victim's header in the tenant's file is refused: headers are bound to their VMSnapshot", async () => {
    const victimFile = (await getAsAdmin('vmsnapshot/victim-base', victimNs)).status.file.path as string;
    const failed = await tamperedRestore('p6-swap', (file) => {
      const head = readHead(victimFile, 1 << 20);
      patchFile(file, 0, head);
    });
    expect(why(failed)).toMatch(/belongs to|not to VMSnapshot|header/);
  }, 900_000);
});

// Path 7 and the tenant's RBAC: what `edit` must not give.
describe('path 7: the tenant cannot write status, inventories or read the agent', () => {
  test('status subresources, VMInventories, the agent namespace and other namespaces are forbidden', async () => {
    const forbidden = async (args: string[], input?: string) => {
      const r = await tenant.kubectl(args, input === undefined ? {} : { input });
      expect({ args: args.join(' '), code: r.code === 0 ? 0 : 1, stderr: /forbidden/i.test(r.stderr) }).toEqual({ args: args.join(' '), code: 1, stderr: true });
    };
    const forged = JSON.stringify({ status: { phase: 'Succeeded', readyToUse: true, nodeName: 'elsewhere', file: { path: '/etc/shadow' } } });
    await forbidden(['patch', 'vmsnapshot', 'p1-snap', '--subresource=status', '--type=merge', '-p', forged]);
    await forbidden(['patch', 'vmrestore', 'p1-restore', '--subresource=status', '--type=merge', '-p', JSON.stringify({ status: { phase: 'Pending', nodeName: 'elsewhere' } })]);
    await forbidden(['create', '-f', '-'], JSON.stringify({ apiVersion: API_VERSION, kind: 'VMInventory', metadata: { name: `forged-${suffix}` } }));
    await forbidden(['patch', 'vminventory', cp.nodeName, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status: { vms: [] } })]);
    await forbidden(['get', 'secrets', '-n', release.namespace]);
    await forbidden(['get', 'pods', '-n', release.namespace]);
    const agentSa = JSON.parse(await nodeKubectlOk(['get', 'serviceaccounts', '-n', release.namespace, '-o', 'json'])).items.map((s: any) => s.metadata.name).find((n: string) => /agent/.test(n));
    expect(agentSa).toBeDefined();
    await forbidden(['create', 'token', agentSa, '-n', release.namespace]);
    await forbidden(['get', 'vmsnapshots', '-n', victimNs]);
    await forbidden(['delete', 'pod', VICTIM, '-n', victimNs]);
    await forbidden(['create', '-f', '-'], snapshotJson(victimNs, 'forged', VICTIM));

    // Status through the main resource is dropped by the API server (status is a subresource).
    const before = (await getAsAdmin('vmsnapshot/p1-snap', tenantNs)).status;
    await tenant.kubectl(['patch', 'vmsnapshot', 'p1-snap', '--type=merge', '-p', forged]);
    expect((await getAsAdmin('vmsnapshot/p1-snap', tenantNs)).status.file).toEqual(before.file);
  }, 900_000);
});

// Path 2: the monitor of a restored QEMU is the tenant's own (its pod's socket): whatever the tenant
// asks of it runs as the pod's user, in the pod, under QEMU's sandbox, never as root on the host.
describe("path 2: the restored QEMU's monitor", () => {
  /** A QMP client run by the tenant inside its pod (the image has node): one command per reply. */
  const qmpScript = (commands: unknown[]) =>
    `node -e '${`
const net = require("net");
const cmds = ${JSON.stringify(commands)};
const s = net.connect("${VM_RUN_MOUNT}/qmp.sock");
let buf = "", i = 0;
s.on("data", (d) => {
  buf += d;
  const lines = buf.split("\\n");
  buf = lines.pop();
  for (const l of lines) {
    console.log(l);
    const m = JSON.parse(l);
    if (m.QMP || "return" in m || "error" in m) {
      if (i < cmds.length) s.write(JSON.stringify(cmds[i++]) + "\\n");
      else s.end();
    }
  }
});
s.on("error", (e) => { console.log("ERROR " + e.message); });
setTimeout(() => process.exit(0), 20000).unref();
`.replaceAll("'", "")}'`;

  test('migrate exec:, pmemsave, dump-guest-memory and blockdev-add aimed at the host do nothing there', async () => {
    const victimPid = victimQemu();
    const before = qemuPidsOfPod(p1.uid);
    const out = await tenantExec(P1, qmpScript([
      { execute: 'qmp_capabilities' },
      { execute: 'pmemsave', arguments: { val: 0, size: 4096, filename: viaProc1(`${hostDir}/pwned-path2-pmem`) } },
      { execute: 'pmemsave', arguments: { val: 0, size: 4096, filename: `${hostDir}/pwned-path2-pmem-plain` } },
      { execute: 'dump-guest-memory', arguments: { paging: false, protocol: `file:${viaProc1(`${hostDir}/pwned-path2-dump`)}` } },
      { execute: 'blockdev-add', arguments: { driver: 'file', 'node-name': 'canary', filename: viaProc1(canaryFile) } },
      { execute: 'query-status' },
      // Last: under -sandbox spawn=deny this may end the tenant's own QEMU, which is its business.
      // The agent's save left mapped-ram on, which refuses a pipe: off, so that exec: really tries to spawn.
      { execute: 'migrate-set-capabilities', arguments: { capabilities: [{ capability: 'mapped-ram', state: false }, { capability: 'multifd', state: false }] } },
      { execute: 'migrate', arguments: { uri: `exec:touch ${hostDir}/pwned-path2-exec; touch ${viaProc1(`${hostDir}/pwned-path2-exec-proc1`)}` } },
      { execute: 'query-migrate' },
    ]));
    outcomes.push(`path 2 QMP session as the tenant:\n    ${out.trim().split('\n').join('\n    ')}`);
    expect(out).toMatch(/"QMP"/);
    await sleep(3000);
    expectHostUntouched();
    for (const pid of [...before, ...qemuPidsOfPod(p1.uid)]) {
      const uids = processUids(pid);
      if (uids) expect(uids).toEqual([VM_UID, VM_UID, VM_UID, VM_UID]);
    }
    expect(pidsWithCmdline(`pwned-path2`).filter((pid) => !inPod(pid, p1.uid))).toEqual([]);
    expect(victimQemu()).toBe(victimPid);
    await deleteTenantPod(P1); // nothing after this uses it: its CPU goes to the next guests
  }, 900_000);
});

// Path 5: disk paths a QEMU reports are names in the pod's mount namespace: the same names on the
// host (the canary, a top layer in the host directory) must never be deleted, created or run.
describe('path 5: disks whose paths name host files', () => {
  const P5 = 'disks';
  afterAll(async () => {
    await deleteTenantPod(P5);
  }, 120_000);

  test('a writable disk chain ending in the canary: the save is refused, nothing on the host changes', async () => {
    const victimPid = victimQemu();
    // Inside the container: the host directory's names, the canary as a raw backing file, the top layer next to it.
    const prepare = [
      'set -e',
      `mkdir -p ${hostDir}`,
      `truncate -s 16M ${canaryFile}`,
      `qemu-img create -q -f qcow2 -b ${canaryFile} -F raw ${hostDir}/top.qcow2 16M`,
      `qemu-img create -q -f qcow2 -b ${canaryFile} -F raw ${hostDir}/ro.qcow2 16M`,
      'exec "$@"',
    ].join('\n');
    const vm = await tenantVmPod(P5, {
      vmName: P5,
      args: (qemu) => [
        'bash', '-c', prepare, 'disks', ...qemu,
        '-drive', `file=${hostDir}/top.qcow2,format=qcow2,if=virtio,id=top`,
        '-drive', `file=${hostDir}/ro.qcow2,format=qcow2,if=virtio,readonly=on,id=ro`,
      ],
    });
    expect(qemuPidsOfPod(vm.uid).length).toBe(1);
    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, 'p5-save', P5) });
    const save = await expectPhase('vmsnapshot/p5-save', tenantNs, 'Failed');
    // Not a volume of the pod: the agent records no such path (and would never open it).
    expect(why(save)).toMatch(/disk top: its image \S+ does not lie beneath a writable volume of the pod/);
    // Detached, the read-only one stays: the save runs, and so do the restore and the deletion.
    const detach = await tenantExec(P5, `node -e '
const s = require("net").connect("${VM_RUN_MOUNT}/qmp.sock"); let i = 0, buf = "";
const cmds = [{execute: "qmp_capabilities"}, {execute: "human-monitor-command", arguments: {"command-line": "drive_del top"}}];
s.on("data", (d) => { buf += d; const l = buf.split("\\n"); buf = l.pop(); for (const x of l) { console.log(x); const m = JSON.parse(x); if (m.QMP || "return" in m || "error" in m) { if (i < cmds.length) s.write(JSON.stringify(cmds[i++]) + "\\n"); else s.end(); } } });
'`);
    outcomes.push(`path 5 drive_del by the tenant: ${detach.trim().split('\n').slice(-1)[0]}`);
    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, 'p5-save-ro', P5) });
    const ro = await finished('vmsnapshot/p5-save-ro', tenantNs);
    note(`${tenantNs}/vmsnapshot/p5-save-ro`, ro);
    if (ro.status.phase === 'Succeeded') {
      await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, 'p5-restore', 'p5-save-ro') });
      note(`${tenantNs}/vmrestore/p5-restore`, await finished('vmrestore/p5-restore', tenantNs));
      await tenant.kubectlOk(['delete', 'vmsnapshot', 'p5-save-ro', '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
    }
    expectHostUntouched();
    expect(victimQemu()).toBe(victimPid);
  }, 900_000);
});

// Path 4: the tenant's sockets are symlinks to the victim's sockets or to a host socket.
describe('path 4: symlinked sockets', () => {
  const P4 = 'links';
  let p4: TenantVm;
  const victimSocket = (name: string) => path.join(cp.kubeletRootDir, 'pods', victimUid, 'volumes', 'kubernetes.io~empty-dir', VM_RUN_VOLUME, name);

  beforeAll(async () => {
    p4 = await tenantVmPod(P4, { vmName: P4 });
    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, 'p4-good', P4) });
    await expectPhase('vmsnapshot/p4-good', tenantNs, 'Succeeded');
  }, 600_000);

  afterAll(async () => {
    if (p4) await deleteTenantPod(P4);
  }, 120_000);

  /** Points the tenant's sockets somewhere, then tries a save and a restore of its own VM: both must fail. */
  async function attack(label: string, qmpTarget: string, launcherTarget: string): Promise<void> {
    const victimPid = victimQemu();
    const victimFiles = storageListing(victimNs);
    const listed = await tenantExec(P4, [
      `cd ${VM_RUN_MOUNT}`,
      `ln -sfn '${qmpTarget}' q.tmp && mv -Tf q.tmp qmp.sock`,
      `ln -sfn '${launcherTarget}' l.tmp && mv -Tf l.tmp launcher.sock`,
      'ls -l',
    ].join(' && '));
    expect(listed).toContain(`qmp.sock -> ${qmpTarget}`);
    expect(listed).toContain(`launcher.sock -> ${launcherTarget}`);
    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, `p4-${label}-save`, P4) });
    const save = await expectPhase(`vmsnapshot/p4-${label}-save`, tenantNs, 'Failed');
    expect(why(save)).toMatch(/symlink|refused|not found|no Running pod|not reach|unreachable/i);
    await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, `p4-${label}-restore`, 'p4-good') });
    const restore = await expectPhase(`vmrestore/p4-${label}-restore`, tenantNs, 'Failed');
    expect(why(restore)).toMatch(/symlink|refused|cannot be reached|not reach/i);

    // No file of the tenant's holds anything like the victim's RAM (96 MiB filled); the victim's files are as they were.
    for (const name of fs.readdirSync(path.join(release.storageRoot, tenantNs))) {
      const st = fs.statSync(path.join(release.storageRoot, tenantNs, name));
      if (name.includes(`p4-${label}-save`)) expect(st.blocks * 512).toBeLessThan(16 << 20);
    }
    expect(storageListing(victimNs)).toEqual(victimFiles);
    await expectVictimIntact(victimPid);
    expectHostUntouched();
  }

  test("links to the victim pod's sockets: the tenant's save and restore fail; the victim runs on untouched", async () => {
    await attack('victim', victimSocket('qmp.sock'), viaProc1(victimSocket('launcher.sock')));
  }, 900_000);

  test('links to a host socket: the agent never connects to it', async () => {
    const sockDir = fs.mkdtempSync(path.join(testDir, 'host-sock-'));
    const hostSock = path.join(sockDir, 'host.sock');
    let connections = 0;
    const server = net.createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(hostSock, r));
    try {
      await attack('host', viaProc1(hostSock), hostSock);
      expect(connections).toBe(0);
    } finally {
      server.close();
    }
  }, 900_000);
});

// Path 8: FIFOs where a file or a socket is expected must not block the agent.
describe('path 8: FIFOs in the run volume', () => {
  const P8 = 'fifo';
  let p8: TenantVm;

  beforeAll(async () => {
    // The VM's RAM is a file in its run volume; once QEMU has it mapped the tenant puts a FIFO in its place.
    p8 = await tenantVmPod(P8, {
      vmName: P8,
      args: (qemu) => {
        const out = [...qemu];
        out[out.indexOf('-machine') + 1] = 'pc,memory-backend=ram0';
        return [...out, '-object', `memory-backend-file,id=ram0,size=128M,mem-path=${VM_RUN_MOUNT}/ram`];
      },
    });
  }, 600_000);

  afterAll(async () => {
    if (p8) await deleteTenantPod(P8);
  }, 120_000);

  async function victimSaveIsPrompt(name: string, victimPid: number): Promise<void> {
    const t0 = Date.now();
    await nodeKubectlOk(['apply', '-f', '-'], { input: snapshotJson(victimNs, name, VICTIM) });
    await expectPhase(`vmsnapshot/${name}`, victimNs, 'Succeeded', 120_000);
    expect(Date.now() - t0).toBeLessThan(120_000);
    const agent = JSON.parse(await nodeKubectlOk(['get', 'pods', '-n', release.namespace, '-l', 'app.kubernetes.io/component=agent', '-o', 'json'])).items as any[];
    expect(agent.filter((p) => p.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True')).length).toBe(1);
    expect(victimQemu()).toBe(victimPid);
  }

  test('a FIFO as the RAM file: the tenant save and restore end, another VM is saved promptly meanwhile', async () => {
    const victimPid = victimQemu();
    await tenantExec(P8, `cd ${VM_RUN_MOUNT} && mv ram ram.mapped && mkfifo ram && mkfifo fifo && mkfifo qmp.sock.qemu.log`);
    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, 'p8-save', P8) });
    await victimSaveIsPrompt('victim-during-p8-save', victimPid);
    const save = await finished('vmsnapshot/p8-save', tenantNs, { timeoutMs: 180_000 });
    note(`${tenantNs}/vmsnapshot/p8-save`, save);
    if (save.status.phase === 'Succeeded') {
      await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, 'p8-restore', 'p8-save') });
      await victimSaveIsPrompt('victim-during-p8-restore', victimPid);
      note(`${tenantNs}/vmrestore/p8-restore`, await finished('vmrestore/p8-restore', tenantNs, { timeoutMs: 240_000 }));
    }
    await expectVictimIntact(victimPid);
    expectHostUntouched();
  }, 900_000);

  // A tenant whose QMP (its QEMU, or a process posing as one in its pod, which passes the peer
  // check) reports a migration 'active' forever, creeping forward one page per poll, must neither
  // hold a save forever nor keep another namespace's save waiting: the agent bounds each save by
  // what really reaches the file (stallTimeoutSeconds) and one namespace never holds every slot
  // (maxOperationsPerNamespace: by default all but one of the node's two).
  test("tenant saves held open forever by the tenant's own QMP server do not starve other namespaces' saves, and end MigrationStalled", async () => {
    const victimPid = victimQemu();
    // The tenant moves its QEMU's socket aside and serves QMP itself from its pod (it passes the
    // peer check: it is the pod's process): every command answered, the migration 'active' forever,
    // creeping forward one page per poll so that it never looks stuck.
    const fake = `
const net = require("net"), fs = require("fs");
const P = "${VM_RUN_MOUNT}/qmp.sock";
fs.renameSync(P, "${VM_RUN_MOUNT}/real.sock");
let migrating = false, n = 0;
const total = 134217728;
const reply = (cmd, args) => {
  switch (cmd) {
    case "query-status": return { status: "running", running: true };
    case "qom-get": return "pc-i440fx-10.0-machine";
    case "query-memory-size-summary": return { "base-memory": total };
    case "query-machines": return [{ name: "pc-i440fx-10.0", "default-ram-id": "pc.ram" }];
    case "query-block": return [];
    case "query-migrate": return migrating ? { status: "active", ram: { total, remaining: total - ++n * 4096, transferred: n * 4096 } } : {};
    case "query-migrate-capabilities": return ["mapped-ram", "multifd", "events"].map((c) => ({ capability: c, state: false }));
    case "query-migrate-parameters": return { "multifd-channels": 2, "max-bandwidth": total, "direct-io": false };
    case "add-fd": return { "fdset-id": (args && args["fdset-id"]) || 7, fd: 42 };
    case "migrate": migrating = true; return {};
    default: return {};
  }
};
net.createServer((s) => {
  s.on("error", () => {});
  s.write(JSON.stringify({ QMP: { version: { qemu: { major: 10, minor: 0, micro: 2 }, package: "" }, capabilities: ["oob"] } }) + "\\n");
  let buf = "";
  s.on("data", (d) => {
    buf += d;
    const lines = buf.split("\\n");
    buf = lines.pop();
    for (const x of lines) {
      let m;
      try { m = JSON.parse(x); } catch { continue; }
      s.write(JSON.stringify({ return: reply(m.execute, m.arguments), ...(m.id !== undefined ? { id: m.id } : {}) }) + "\\n");
    }
  });
}).listen(P);
`;
    const slow = ['hold-a', 'hold-b'];
    for (const name of slow) {
      await tenantVmPod(name, { vmName: name });
      await tenant.kubectlOk(['exec', '-i', name, '-c', 'vm', '--', 'bash', '-c', `cat > ${VM_RUN_MOUNT}/fake.js`], { input: fake });
      await tenantExec(name, `cd ${VM_RUN_MOUNT} && (setsid nohup node fake.js > fake.log 2>&1 &) && sleep 1 && ls -l qmp.sock real.sock && cat fake.log`);
    }
    for (const name of slow) await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, `${name}-save`, name) });
    const phases = async () => Promise.all(slow.map(async (name) => (await getAsAdmin(`vmsnapshot/${name}-save`, tenantNs)).status?.phase as string | undefined));
    try {
      // One of the tenant's saves runs; the other waits for a slot although one is free: the
      // tenant's share is one slot of two.
      await until('a tenant save to be InProgress', async () => ((await phases()).includes('InProgress') ? true : undefined), 60_000);
      await sleep(5000);
      for (const name of slow) {
        const o = await getAsAdmin(`vmsnapshot/${name}-save`, tenantNs);
        outcomes.push(`${tenantNs}/vmsnapshot/${name}-save after 5 s: ${o.status?.phase} ${JSON.stringify(o.status?.progress ?? {})}`);
      }
      expect((await phases()).sort()).toEqual(['InProgress', 'Pending']);
      // The victim's owner saves meanwhile: it gets the free slot, ahead of the tenant's older queued save.
      await victimSaveIsPrompt('victim-during-held-saves', victimPid);
      const victim = await getAsAdmin('vmsnapshot/victim-during-held-saves', victimNs);

      // Each held save ends Failed for the stall, within the bound: the save's own stall period, then
      // as long again for the drain, then the cancel (10 s), with room for a loaded node.
      const bound = (3 * STALL_SECONDS + 60) * 1000;
      const held: Array<Record<string, any>> = [];
      for (const name of slow) {
        const o = await expectPhase(`vmsnapshot/${name}-save`, tenantNs, 'Failed', 2 * bound);
        const ready = (o.status.conditions as any[]).find((c) => c.type === 'Ready');
        expect(ready.reason).toBe('MigrationStalled');
        expect(o.status.error.message).toMatch(/the save stalled: QEMU wrote nothing to the snapshot file for \d+ s \(\S+ allocated in the file/);
        expect(Date.parse(o.status.completionTime) - Date.parse(o.status.startTime)).toBeLessThan(bound);
        held.push(o);
      }
      // Ordered by the objects' own times: the victim's save ran and finished while the first
      // tenant save was held, before the tenant's second save got its slot.
      const [first, second] = held.sort((a, b) => Date.parse(a.status.startTime) - Date.parse(b.status.startTime));
      expect(Date.parse(victim.status.completionTime)).toBeLessThan(Date.parse(first!.status.completionTime));
      expect(Date.parse(victim.status.completionTime)).toBeLessThanOrEqual(Date.parse(second!.status.startTime));
      // No file of the held saves is left behind.
      expect(Object.keys(storageListing(tenantNs)).filter((f) => slow.some((n) => f.startsWith(`${n}-save`)))).toEqual([]);
      await expectVictimIntact(victimPid);
    } finally {
      for (const name of slow) await tenant.kubectl(['delete', 'vmsnapshot', `${name}-save`, '--wait=false']);
      for (const name of slow) await deleteTenantPod(name);
    }
  }, 900_000);

  test('FIFOs as the sockets: the tenant save fails promptly, the agent serves the victim', async () => {
    const victimPid = victimQemu();
    await tenantExec(P8, `cd ${VM_RUN_MOUNT} && rm -f qmp.sock launcher.sock && mkfifo qmp.sock launcher.sock`);
    const t0 = Date.now();
    await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, 'p8-fifo-sock', P8) });
    const save = await expectPhase('vmsnapshot/p8-fifo-sock', tenantNs, 'Failed', 120_000);
    expect(Date.now() - t0).toBeLessThan(120_000);
    expect(why(save)).toMatch(/socket|refused|not found|no Running pod|unreachable/i);
    await victimSaveIsPrompt('victim-after-p8-fifo', victimPid);
    await expectVictimIntact(victimPid);
    expectHostUntouched();
  }, 900_000);
});

// Copies and wakes: the operator creates a pod from the spec recorded with the snapshot. It must be
// no way around RBAC (creating a VMRestore needs the right to create pods, checked by admission for
// the requesting user) nor around Pod Security (the operator's create goes through the namespace's
// level like the tenant's own; the operator holds no exemption).
describe('copies: the operator makes pods only as the tenant could', () => {
  test('a user who may create VMRestores but not pods cannot create a VMRestore', async () => {
    const restorer = `system:serviceaccount:${tenantNs}:restorer`;
    await nodeKubectlOk(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'restores-only', namespace: tenantNs }, rules: [{ apiGroups: ['vmsnap.io'], resources: ['vmrestores'], verbs: ['create', 'get'] }] },
          {
            apiVersion: 'rbac.authorization.k8s.io/v1',
            kind: 'RoleBinding',
            metadata: { name: 'restores-only', namespace: tenantNs },
            roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'restores-only' },
            subjects: [{ kind: 'ServiceAccount', name: 'restorer', namespace: tenantNs }],
          },
        ],
      }),
    });
    const r = await nodeKubectl(['create', '--as', restorer, '-f', '-'], { input: restoreJson(tenantNs, 'sneaky-copy', 'any', { targetVMName: 'sneaky' }) });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/a VMRestore can make a pod .*may not create pods in namespace/);
    expect((await nodeKubectl(['get', 'vmrestore', 'sneaky-copy', '-n', tenantNs])).code).not.toBe(0);
  });

  test("a copy of a pod the namespace's Pod Security level refuses is refused by that admission; no pod is made", async () => {
    // The tenant's VM pod was admitted while the namespace was baseline: it keeps its capabilities.
    await ensureNamespace(tenantNs, 'baseline');
    let loose: TenantVm;
    try {
      loose = await tenantVmPod('loose', { edit: (pod) => delete pod.spec.containers[0].securityContext.capabilities });
      await tenant.kubectlOk(['apply', '-f', '-'], { input: snapshotJson(tenantNs, 'loose-snap', 'loose') });
      await expectPhase('vmsnapshot/loose-snap', tenantNs, 'Succeeded');
    } finally {
      await ensureNamespace(tenantNs, 'restricted');
    }
    // Now restricted: the tenant's own create of that pod would be refused, and so is the copy.
    const own = await tenant.kubectl(['create', '--dry-run=server', '-f', '-'], { input: JSON.stringify({ ...(await getAsAdmin('pod/loose', tenantNs)), metadata: { name: 'loose-own', namespace: tenantNs } }) });
    expect(own.stderr).toMatch(/violates PodSecurity "restricted/);
    await tenant.kubectlOk(['apply', '-f', '-'], { input: restoreJson(tenantNs, 'loose-copy', 'loose-snap', { targetVMName: 'loose-copy', ifRunning: 'Fail' }) });
    const o = await expectPhase('vmrestore/loose-copy', tenantNs, 'Failed');
    expect(o.status.error.message).toMatch(/the API server refused pod loose-copy .*violates PodSecurity "restricted/);
    expect((await nodeKubectl(['get', 'pod', 'loose-copy', '-n', tenantNs])).code).not.toBe(0);
    expect(qemuPidsOfPod(loose.uid)).toHaveLength(1);
    await deleteTenantPod('loose');
  });
});
