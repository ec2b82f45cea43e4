#!/usr/bin/env node
// kubectl-vmsnap: the `kubectl vmsnap` plugin. It builds ordinary VMSnapshots and VMRestores
// (resources.ts), creates them with the user's kubeconfig, and with --wait follows their status.
import * as k8s from '@kubernetes/client-node';
import { Phase, toYaml } from '../api/index.js';
import { isTerminal } from '../api/protocol.js';
import { Kube, apiMessage, statusCode, type KubeObject, type ResourceName } from '../kube/client.js';
import { USAGE, UsageError, parseInvocation, type Invocation } from './args.js';
import { progressLine, type WaitedStatus } from './progress.js';
import { build } from './resources.js';

const FULL_NAME: Record<'vmSnapshot' | 'vmRestore', string> = { vmSnapshot: 'vmsnapshot.vmsnap.io', vmRestore: 'vmrestore.vmsnap.io' };
const POLL_MS = 500;

/** Kubeconfig from --kubeconfig, else $KUBECONFIG, ~/.kube/config or the in-cluster account. */
export function kubeConfig(inv: Pick<Invocation, 'kubeconfig' | 'context'>): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (inv.kubeconfig) kc.loadFromFile(inv.kubeconfig);
  else kc.loadFromDefault();
  if (inv.context) {
    if (!kc.getContextObject(inv.context)) throw new UsageError(`--context "${inv.context}": no such context in the kubeconfig (it has ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
    kc.setCurrentContext(inv.context);
  }
  return kc;
}

function print(obj: unknown, output: Invocation['output']): string {
  return output === 'json' ? `${JSON.stringify(obj, null, 2)}\n` : toYaml(obj as object);
}

async function waitFor(kube: Kube, resource: 'vmSnapshot' | 'vmRestore', namespace: string, name: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  const tty = process.stderr.isTTY;
  let last = '';
  for (;;) {
    const obj = await kube.get<KubeObject & { status?: WaitedStatus & { error?: { message?: string }; durationHuman?: string; restoreSizeHuman?: string } }>(resource, { namespace, name });
    if (!obj) throw new Error(`${FULL_NAME[resource]}/${name} was deleted while waiting`);
    const line = progressLine(obj.status);
    if (line !== last) process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
    last = line;
    const phase = obj.status?.phase;
    if (isTerminal(phase)) {
      if (tty) process.stderr.write('\n');
      if (phase === Phase.Failed) {
        process.stderr.write(`${FULL_NAME[resource]}/${name} Failed: ${obj.status?.error?.message ?? 'see kubectl describe'}\n`);
        return 1;
      }
      const took = obj.status?.durationHuman ? ` in ${obj.status.durationHuman}` : '';
      process.stdout.write(`${FULL_NAME[resource]}/${name} Succeeded${took}\n`);
      return 0;
    }
    if (Date.now() > deadline) {
      if (tty) process.stderr.write('\n');
      process.stderr.write(`${FULL_NAME[resource]}/${name}: still ${phase ?? Phase.Pending} after --timeout ${Math.round(timeoutMs / 1000)}s (it goes on; kubectl vmsnap ls shows it)\n`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

type Listed = KubeObject & { spec: Record<string, string | undefined>; status?: WaitedStatus & Record<string, any> };

function age(ts: string | Date | undefined, now: number): string {
  const s = Math.max(0, Math.floor((now - (ts ? new Date(ts).getTime() : now)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** One table of both kinds, oldest first; a VM argument keeps the objects of that VM. */
export function lsTable(snapshots: Listed[], restores: Listed[], opts: { vm?: string; allNamespaces: boolean; now: number }): string {
  const vmOfRestore = (r: Listed) => r.status?.effective?.targetVMName ?? r.spec.targetVMName ?? r.spec.latestSnapshotOf;
  const rows = [
    ...snapshots.filter((s) => !opts.vm || s.spec.vmName === opts.vm).map((s) => ({ o: s, kind: 'snapshot', vm: s.spec.vmName, from: '', size: s.status?.restoreSizeHuman ?? '' })),
    ...restores
      .filter((r) => !opts.vm || vmOfRestore(r) === opts.vm)
      .map((r) => ({ o: r, kind: 'restore', vm: vmOfRestore(r) ?? '', from: r.status?.snapshotName ?? r.spec.snapshotName ?? `latest of ${r.spec.latestSnapshotOf}`, size: '' })),
  ].sort((a, b) => new Date(a.o.metadata.creationTimestamp ?? 0).getTime() - new Date(b.o.metadata.creationTimestamp ?? 0).getTime());
  const header = [...(opts.allNamespaces ? ['NAMESPACE'] : []), 'KIND', 'NAME', 'VM', 'FROM', 'PHASE', 'PROGRESS', 'SIZE', 'DURATION', 'AGE'];
  const table = rows.map((r) => {
    const p = r.o.status?.progress;
    const progress = r.o.status?.phase === Phase.InProgress && p?.bytesTotal ? `${Math.floor((100 * (p.bytesDone ?? 0)) / p.bytesTotal)}%` : '';
    return [
      ...(opts.allNamespaces ? [r.o.metadata.namespace ?? ''] : []),
      r.kind,
      r.o.metadata.name ?? '',
      r.vm ?? '',
      r.from,
      r.o.status?.phase ?? Phase.Pending,
      progress,
      r.size,
      r.o.status?.durationHuman ?? '',
      age(r.o.metadata.creationTimestamp, opts.now),
    ];
  });
  if (table.length === 0) return '';
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  return [header, ...table].map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join('   ').trimEnd()).join('\n') + '\n';
}

async function ls(kube: Kube, inv: Invocation, namespace: string): Promise<number> {
  const ns = inv.allNamespaces ? undefined : namespace;
  const [snapshots, restores] = await Promise.all([kube.list<Listed>('vmSnapshot', { namespace: ns }), kube.list<Listed>('vmRestore', { namespace: ns })]);
  if (inv.output) {
    process.stdout.write(print({ apiVersion: 'v1', kind: 'List', items: [...snapshots, ...restores] }, inv.output));
    return 0;
  }
  const table = lsTable(snapshots, restores, { vm: inv.target, allNamespaces: inv.allNamespaces, now: Date.now() });
  if (table) process.stdout.write(table);
  else process.stderr.write(`No VMSnapshots or VMRestores${inv.target ? ` of VM ${inv.target}` : ''} in ${ns ? `namespace ${ns}` : 'any namespace'}.\n`);
  return 0;
}

export async function run(argv: readonly string[], now = new Date()): Promise<number> {
  const inv = parseInvocation(argv);
  if (inv === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const needsCluster = !(inv.dryRun && inv.namespace);
  const kc = needsCluster || inv.kubeconfig ? kubeConfig(inv) : undefined;
  const namespace = inv.namespace ?? (kc && kc.getContextObject(kc.getCurrentContext())?.namespace) ?? 'default';
  if (inv.command === 'ls') return ls(new Kube(kc!), inv, namespace);

  const { resource, object } = build(inv, namespace, now);
  const ref = `${FULL_NAME[resource]}/${object.metadata.name}`;
  if (inv.dryRun) {
    process.stdout.write(inv.output === 'yaml' || inv.output === 'json' ? print(object, inv.output) : inv.output === 'name' ? `${ref}\n` : `${ref} created (dry run)\n`);
    return 0;
  }
  const kube = new Kube(kc!);
  let created: KubeObject;
  try {
    created = await kube.create(resource as ResourceName, object as unknown as KubeObject);
  } catch (err) {
    const code = statusCode(err);
    if (code === 409) throw new Error(`${ref} exists already in namespace ${namespace}: choose another --name`);
    throw new Error(`creating ${ref} in namespace ${namespace}: ${apiMessage(err)}`);
  }
  if (inv.output === 'yaml' || inv.output === 'json') process.stdout.write(print(created, inv.output));
  else process.stdout.write(inv.output === 'name' ? `${ref}\n` : `${ref} created\n`);
  if (!inv.wait) return 0;
  return waitFor(kube, resource, namespace, object.metadata.name!, inv.timeoutMs);
}

// Run when executed (bin/kubectl-vmsnap), not when imported by tests.
if (process.argv[1] && /kubectl-vmsnap$|plugin[/\\]main\.js$/.test(process.argv[1])) {
  run(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`kubectl-vmsnap: ${err instanceof UsageError ? `${err.message}\n(kubectl vmsnap --help shows the usage)` : apiMessage(err)}\n`);
      process.exitCode = err instanceof UsageError ? 2 : 1;
    },
  );
}
