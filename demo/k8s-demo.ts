// `npm run demo`: the embedded default. Starts the local control plane,
// installs the chart, runs the operator and one agent (as the chart's
// ServiceAccounts), boots a demo VM, then applies examples/vmsnapshot.yaml
// (live progress) and examples/vmrestore.yaml, shows the guest alive with its
// memory intact, and leaves everything running. `npm run demo:down` ends it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const stateRoot = process.env.VMSNAP_STATE ?? path.join(os.homedir(), '.local/state/vmsnap');
// The demo uses the same control plane as `npm run cluster:up`.
process.env.VMSNAP_TEST_CLUSTER_STATE ??= path.join(stateRoot, 'cluster');
// ...in the same mode (with the node), or each would restart the other's instance.
process.env.VMSNAP_TEST_CLUSTER_NODE ??= process.env.VMSNAP_CLUSTER_NODE ?? '1';
process.env.VMSNAP_CLUSTER_QUIET ??= '1';
const demoDir = path.join(stateRoot, 'k8s-demo');
const recordFile = path.join(stateRoot, 'k8s-demo.json');

const { kubectl, kubectlOk, helm, repoRoot } = await import('../test/cluster/controlplane.js');
const { startStack, getJson, killQemusUnder } = await import('../test/e2e/stack.js');
const { startGuest } = await import('../test/guest/guest.js');
const { waitForLine } = await import('./serial.js');

const MEM_MIB = Number(process.env.VMSNAP_DEMO_MEM_MIB ?? 512);
const FILL_MIB = Number(process.env.VMSNAP_DEMO_FILL_MIB ?? 256);
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const step = (s: string) => console.log(bold(s));

interface DemoRecord {
  release: string;
  releaseNamespace: string;
  kubeconfig: string;
  pids: number[];
  workDir: string;
}

/** Ends what a previous demo left: its processes, VMs and chart release. */
export async function teardown(): Promise<void> {
  if (!fs.existsSync(recordFile)) return;
  const rec = JSON.parse(fs.readFileSync(recordFile, "utf8")) as DemoRecord;
  for (const pid of rec.pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  killQemusUnder(rec.workDir);
  await kubectl(['delete', 'vmrestore', 'demo-restore', '-n', 'default', '--ignore-not-found', '--wait=false']);
  await kubectl(['patch', 'vmsnapshot', 'demo-snapshot', '-n', 'default', '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
  await kubectl(['delete', 'vmsnapshot', 'demo-snapshot', '-n', 'default', '--ignore-not-found', '--wait=false']);
  await helm(['uninstall', rec.release, '-n', rec.releaseNamespace]);
  fs.rmSync(rec.workDir, { recursive: true, force: true });
  fs.rmSync(recordFile, { force: true });
}

function bar(done: number, total: number, mibps: number): string {
  const pct = total > 0 ? (100 * done) / total : 0;
  const filled = Math.round(pct / 5);
  return `   [${'#'.repeat(filled)}${'.'.repeat(20 - filled)}] ${pct.toFixed(0).padStart(3)}%  ${(done / (1 << 20)).toFixed(0)}/${(total / (1 << 20)).toFixed(0)} MiB  ${mibps.toFixed(0)} MiB/s`;
}

/** Polls an object until it is Succeeded or Failed, drawing status.progress as it goes. */
async function follow(resource: string): Promise<Record<string, any>> {
  const started = Date.now();
  let lastLine = '';
  for (;;) {
    const obj = (await getJson(resource, 'default')) as { status?: Record<string, any> };
    const st = obj.status ?? {};
    if (st.progress?.bytesTotal) {
      const secs = (Date.now() - started) / 1000;
      const line = bar(st.progress.bytesDone, st.progress.bytesTotal, st.progress.bytesDone / (1 << 20) / Math.max(secs, 0.001));
      if (line !== lastLine) process.stdout.write(process.stdout.isTTY ? `\r${line}` : `${line}\n`);
      lastLine = line;
    }
    if (st.phase === 'Succeeded' || st.phase === 'Failed') {
      if (process.stdout.isTTY && lastLine) process.stdout.write('\n');
      if (st.phase === 'Failed') throw new Error(`${resource} failed: ${st.error?.message}`);
      return obj as Record<string, any>;
    }
    if (Date.now() - started > 300_000) throw new Error(`${resource} did not finish within 5 minutes (phase ${st.phase})`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function main(): Promise<void> {
  if (process.argv.includes('--down')) {
    await teardown();
    console.log('demo stopped (the control plane keeps running: npm run cluster:down stops it)');
    return;
  }
  const t0 = Date.now();
  await teardown();
  step('1. local control plane (etcd + kube-apiserver), the CRDs, the Helm chart, the operator and one agent');
  const stack = await startStack(['demo-node'], { detached: true, workDir: demoDir });
  const record: DemoRecord = {
    release: stack.release,
    releaseNamespace: stack.releaseNamespace,
    kubeconfig: stack.cp.kubeconfig,
    pids: [stack.operator.pid!, ...[...stack.agents.values()].map((a) => a.process.pid!)],
    workDir: demoDir,
  };
  fs.writeFileSync(recordFile, JSON.stringify(record, null, 2));
  console.log(`   API server ${stack.cp.server}; chart release ${stack.release} in ${stack.releaseNamespace}`);

  step(`2. demo VM "demo" in namespace default (${MEM_MIB} MiB, TCG); its init fills ${FILL_MIB} MiB with a pattern and re-checks it`);
  const agent = stack.agents.get('demo-node')!;
  const guest = await startGuest({ dir: path.join(agent.vmRoot, 'default', 'demo'), name: 'demo', memMiB: MEM_MIB, fillMiB: FILL_MIB, seed: 7 });
  await guest.waitForSerial(/VMSNAP PASS n=1 ok/, 180_000);
  await kubectlOk(['wait', '--for=jsonpath={.status.vmCount}=1', `vminventory/${agent.nodeName}`, '--timeout=60s']);
  console.log(`   running; the agent reports it in VMInventory ${agent.nodeName}`);

  step('3. kubectl apply -f examples/vmsnapshot.yaml');
  const tApply = Date.now();
  await kubectlOk(['apply', '-f', path.join(repoRoot, 'examples/vmsnapshot.yaml')]);
  const snap = await follow('vmsnapshot/demo-snapshot');
  const snapWall = Date.now() - tApply;
  console.log(`   Succeeded: ${snap.status.restoreSizeHuman} in ${snap.status.durationHuman} (${snap.status.throughputHuman}) on ${snap.status.nodeName}: ${snap.status.file.path}`);

  step('4. kubectl apply -f examples/vmrestore.yaml (ifRunning: Replace: stops the VM and restores it)');
  const offset = guest.serialText().length;
  const lastPass = guest.lastPass();
  const tRestore = Date.now();
  await kubectlOk(['apply', '-f', path.join(repoRoot, 'examples/vmrestore.yaml')]);
  const restore = await follow('vmrestore/demo-restore');
  const restoreWall = Date.now() - tRestore;
  console.log(`   Succeeded in ${restore.status.durationHuman ?? `${restore.status.durationMs} ms`}, VM down for ${restore.status.downtimeHuman ?? `${restore.status.downtimeMs} ms`}`);

  step('5. the guest after the restore');
  const m = await waitForLine(guest.serialPath, offset, /VMSNAP (PASS n=(\d+) ok|BAD[^\r\n]*)/, 60_000);
  if (m[1]!.startsWith('BAD')) throw new Error(`the restored guest found damaged memory: ${m[1]}`);
  console.log(`   last memory check before the restore: pass ${lastPass}; after: pass ${m[2]} ok: ${FILL_MIB} MiB intact, the guest runs on`);

  step('\nsummary');
  console.log(`   kubectl apply -> Succeeded: snapshot ${snapWall} ms (engine ${snap.status.durationMs} ms, VM paused ${snap.status.vmPausedMs} ms), restore ${restoreWall} ms`);
  console.log(`   whole demo ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  console.log('The stack keeps running. Try:');
  console.log(`   export KUBECONFIG=${stack.cp.kubeconfig}`);
  console.log(`   export PATH=${path.dirname(stack.cp.kubectl)}:$PATH`);
  console.log('   kubectl get vms,vmr -A                # snapshots and restores');
  console.log('   kubectl describe vms demo-snapshot    # the story in events');
  console.log('   kubectl get vminventories -o wide     # what the agent sees');
  console.log('   kubectl apply -f examples/hibernate.yaml');
  console.log(`   tail -f ${guest.serialPath}`);
  console.log(`Logs: ${demoDir}/operator.log, ${agent.logPath}`);
  console.log('Tear it down: npm run demo:down (and npm run cluster:down for the control plane)');
}

try {
  await main();
  process.exit(0);
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
}
