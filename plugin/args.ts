// Command-line parsing of `kubectl vmsnap`: node's util.parseArgs (strict), then each positional
// and value checked against the API's own rules, with errors that name the argument.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DNS1123_LABEL_MAX, DNS1123_SUBDOMAIN_MAX, MAX_CHANNELS, MIN_CHANNELS, dns1123Label, dns1123Subdomain, parseDurationMs } from '../api/common.js';

export const COMMANDS = ['ls', 'save', 'hibernate', 'wake', 'restore'] as const;
export type Command = (typeof COMMANDS)[number];
export const OUTPUTS = ['yaml', 'json', 'name'] as const;
export type Output = (typeof OUTPUTS)[number];

export interface Invocation {
  command: Command;
  /** The VM (save, hibernate, wake, ls filter) or the snapshot (restore). */
  target?: string;
  namespace?: string;
  allNamespaces: boolean;
  kubeconfig?: string;
  context?: string;
  name?: string;
  className?: string;
  channels?: number;
  live: boolean;
  as?: string;
  lazy: boolean;
  replace: boolean;
  wait: boolean;
  timeoutMs: number;
  /** spec.failureDeadline of the object created (the API's default when unset). */
  failureDeadline?: string;
  dryRun: boolean;
  output?: Output;
}

export class UsageError extends Error {}

export const USAGE = `kubectl vmsnap: save and restore the RAM of QEMU VMs (vmsnap.io resources)

Usage:
  kubectl vmsnap ls [VM] [-A]                 list VMSnapshots and VMRestores (of one VM)
  kubectl vmsnap save VM [--live] [--class C] [--channels N]
                                              snapshot a running VM (VMSnapshot, it keeps running)
  kubectl vmsnap hibernate VM [--class C]     snapshot a VM and stop it (afterSnapshot: Stop)
  kubectl vmsnap wake VM [--lazy]             restore VM from its newest Succeeded snapshot
  kubectl vmsnap restore SNAPSHOT [--as NAME] [--lazy] [--replace]
                                              restore a snapshot into its VM, or a copy named NAME

Options:
  -n, --namespace NS   namespace (default: the kubeconfig context's, else "default")
  -A, --all-namespaces ls: every namespace
      --kubeconfig F   kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)
      --context CTX    kubeconfig context
      --name NAME      name of the object to create (default: <VM or snapshot>-<UTC time>)
      --wait           wait until it Succeeded or Failed, with a progress bar (exit 1 on Failed)
      --timeout DUR    with --wait: give up after DUR (Go duration, default 30m)
      --failure-deadline DUR
                       spec.failureDeadline: how long a missing VM, class or snapshot is
                       waited for before the object fails (default 10m)
      --dry-run        print the object instead of creating it (with -o yaml: apply it yourself)
  -o, --output FMT     yaml, json or name
  -h, --help           this help

Everything it does is an ordinary VMSnapshot or VMRestore: --dry-run -o yaml shows the YAML.`;

const OPTIONS = {
  namespace: { type: 'string', short: 'n' },
  'all-namespaces': { type: 'boolean', short: 'A' },
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  name: { type: 'string' },
  class: { type: 'string' },
  channels: { type: 'string' },
  live: { type: 'boolean' },
  as: { type: 'string' },
  lazy: { type: 'boolean' },
  replace: { type: 'boolean' },
  wait: { type: 'boolean' },
  timeout: { type: 'string' },
  'failure-deadline': { type: 'string' },
  'dry-run': { type: 'string' }, // --dry-run, --dry-run=client (kubectl's spelling)
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
} satisfies ParseArgsConfig['options'];

/** Which options each command takes beyond the common ones. */
const ALLOWED: Record<Command, readonly string[]> = {
  ls: ['all-namespaces'],
  save: ['name', 'class', 'channels', 'live'],
  hibernate: ['name', 'class', 'channels'],
  wake: ['name', 'lazy'],
  restore: ['name', 'as', 'lazy', 'replace'],
};
const COMMON = ['namespace', 'kubeconfig', 'context', 'output', 'help', 'wait', 'timeout', 'dry-run'];
/** Options of the commands that create an object. */
const CREATING = ['failure-deadline'];
const TARGET: Record<Command, string | undefined> = { ls: 'VM', save: 'VM', hibernate: 'VM', wake: 'VM', restore: 'SNAPSHOT' };

function check<T>(label: string, schema: { safeParse(v: unknown): { success: boolean; error?: { issues: Array<{ message: string }> } } }, value: T): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new UsageError(`${label} "${String(value)}": ${r.error!.issues[0]!.message.replace(/^\S+ /, '')}`);
  return value;
}

/** `--dry-run` takes an optional value; parseArgs needs one, so a bare flag gets "client". */
function normaliseDryRun(argv: readonly string[]): string[] {
  return argv.map((a, i) => (a === '--dry-run' && (argv[i + 1] === undefined || argv[i + 1]!.startsWith('-') || !['client', 'server', 'none'].includes(argv[i + 1]!)) ? '--dry-run=client' : a));
}

export function parseInvocation(argv: readonly string[]): Invocation | 'help' {
  let parsed;
  try {
    parsed = parseArgs({ args: normaliseDryRun(argv), options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    const m = /'([^']+)'/.exec((err as Error).message);
    const what = (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 'unknown option' : 'bad option';
    throw new UsageError(m ? `${what} ${m[1]}: ${(err as Error).message.split('\n')[0]}` : (err as Error).message);
  }
  const { values: v, positionals } = parsed;
  if (v.help || positionals.length === 0) return 'help';
  const [command, ...rest] = positionals;
  if (!(COMMANDS as readonly string[]).includes(command!)) throw new UsageError(`unknown command "${command}": use one of ${COMMANDS.join(', ')}`);
  const cmd = command as Command;
  for (const key of Object.keys(v)) {
    if (!COMMON.includes(key) && !ALLOWED[cmd].includes(key) && !(cmd !== 'ls' && CREATING.includes(key))) throw new UsageError(`option --${key} does not apply to "${cmd}" (it takes ${[...ALLOWED[cmd], ...COMMON].map((k) => `--${k}`).join(', ')})`);
  }
  if (rest.length > 1) throw new UsageError(`"${cmd}" takes one ${TARGET[cmd]}, got ${rest.length} arguments: ${rest.join(' ')}`);
  const target = rest[0];
  if (target === undefined && cmd !== 'ls') throw new UsageError(`"${cmd}" needs a ${TARGET[cmd]} argument`);
  if (target !== undefined) check(TARGET[cmd]!, cmd === 'restore' ? dns1123Subdomain('SNAPSHOT') : dns1123Label('VM'), target);
  if (v.namespace !== undefined) check('--namespace', dns1123Label('namespace'), v.namespace);
  if (v.name !== undefined) check('--name', dns1123Subdomain('name'), v.name);
  if (v.class !== undefined) check('--class', dns1123Subdomain('class'), v.class);
  if (v.as !== undefined) check('--as', dns1123Label('as'), v.as);
  let channels: number | undefined;
  if (v.channels !== undefined) {
    channels = Number(v.channels);
    if (!/^\d+$/.test(v.channels) || channels < MIN_CHANNELS || channels > MAX_CHANNELS) throw new UsageError(`--channels "${v.channels}": must be a whole number from ${MIN_CHANNELS} to ${MAX_CHANNELS}`);
  }
  let timeoutMs = 30 * 60_000;
  if (v.timeout !== undefined) {
    try {
      timeoutMs = parseDurationMs(v.timeout);
    } catch {
      throw new UsageError(`--timeout "${v.timeout}": must be a Go duration such as "90s", "10m" or "1h"`);
    }
    if (!v.wait) throw new UsageError('--timeout only applies with --wait');
  }
  const failureDeadline = v['failure-deadline'];
  if (failureDeadline !== undefined) {
    try {
      parseDurationMs(failureDeadline);
    } catch {
      throw new UsageError(`--failure-deadline "${failureDeadline}": must be a Go duration such as "30s" or "10m"`);
    }
  }
  const dry = v['dry-run'];
  if (dry !== undefined && dry !== 'client' && dry !== 'none') throw new UsageError(`--dry-run "${dry}": only --dry-run (or --dry-run=client) is supported: it prints the object and creates nothing`);
  if (v.output !== undefined && !(OUTPUTS as readonly string[]).includes(v.output)) throw new UsageError(`--output "${v.output}": use one of ${OUTPUTS.join(', ')}`);
  if (cmd === 'ls' && v.output === 'name') throw new UsageError('--output name does not apply to "ls": use yaml or json, or no -o for the table');
  if (dry === 'client' && v.wait) throw new UsageError('--wait and --dry-run exclude each other: a dry run creates nothing to wait for');
  if (v['all-namespaces'] && v.namespace !== undefined) throw new UsageError('-A/--all-namespaces and -n/--namespace exclude each other');
  return {
    command: cmd,
    target,
    namespace: v.namespace,
    allNamespaces: v['all-namespaces'] ?? false,
    kubeconfig: v.kubeconfig,
    context: v.context,
    name: v.name,
    className: v.class,
    channels,
    live: v.live ?? false,
    as: v.as,
    lazy: v.lazy ?? false,
    replace: v.replace ?? false,
    wait: v.wait ?? false,
    timeoutMs,
    failureDeadline,
    dryRun: dry === 'client',
    output: v.output as Output | undefined,
  };
}

export const NAME_LIMITS = { label: DNS1123_LABEL_MAX, subdomain: DNS1123_SUBDOMAIN_MAX };
