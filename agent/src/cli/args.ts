// Command-line parsing for vmsnap-agent: every bad value is refused with the
// option's name and what is allowed.
import { parseArgs } from 'node:util';
import type { DirectIOMode } from '../snapshot-file/metadata.js';

export class UsageError extends Error {
  override name = 'UsageError';
}

export const USAGE = `usage:
  vmsnap-agent save --qmp SOCK --out FILE [--channels N] [--direct-io auto|on|off] [--after resume|stop] [--live] [--force] [--digest] [--json]
  vmsnap-agent restore --in FILE --qmp SOCK [--channels N] [--direct-io auto|on|off] [--launch [--lazy [--no-prefetch]]] [--paused] [--verify] [--json]
  vmsnap-agent inspect FILE [--verify] [--json]
  vmsnap-agent daemon [--config FILE]     (node agent; env NODE_NAME, KUBECONFIG, VMSNAP_AGENT_CONFIG)

restore --launch starts QEMU from the command line recorded in FILE, as the user running this
command: launch only from files your own QEMUs wrote.`;

export const DEFAULT_CHANNELS = 4;

export type Command =
  | { kind: 'save'; qmp: string; out: string; channels: number; directIO: DirectIOMode; after: 'resume' | 'stop'; live: boolean; force: boolean; digest: boolean; json: boolean }
  | { kind: 'restore'; in: string; qmp: string; channels?: number; directIO: DirectIOMode; launch: boolean; lazy: boolean; prefetch: boolean; paused: boolean; verify: boolean; json: boolean }
  | { kind: 'inspect'; file: string; verify: boolean; json: boolean }
  | { kind: 'daemon'; config?: string }
  | { kind: 'help' };

function oneOf<T extends string>(option: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new UsageError(`--${option} must be one of ${allowed.join(', ')}; got '${value}'`);
}

function channelsOption(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 64) throw new UsageError(`--channels must be an integer from 1 to 64; got '${value}'`);
  return n;
}

function required(option: string, value: string | undefined): string {
  if (!value) throw new UsageError(`--${option} is required`);
  return value;
}

export function parseCommand(argv: string[]): Command {
  const [verb, ...rest] = argv;
  if (!verb || verb === 'help' || verb === '--help' || verb === '-h') return { kind: 'help' };
  const options = {
    qmp: { type: 'string' },
    out: { type: 'string' },
    in: { type: 'string' },
    channels: { type: 'string' },
    'direct-io': { type: 'string' },
    after: { type: 'string' },
    live: { type: 'boolean' },
    force: { type: 'boolean' },
    launch: { type: 'boolean' },
    lazy: { type: 'boolean' },
    'no-prefetch': { type: 'boolean' },
    paused: { type: 'boolean' },
    digest: { type: 'boolean' },
    verify: { type: 'boolean' },
    json: { type: 'boolean' },
    config: { type: 'string' },
  } as const;
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  const directIO = oneOf('direct-io', v['direct-io'], ['auto', 'on', 'off'] as const, 'auto');
  const json = v.json ?? false;
  switch (verb) {
    case 'save':
      return {
        kind: 'save',
        qmp: required('qmp', v.qmp),
        out: required('out', v.out),
        channels: channelsOption(v.channels) ?? DEFAULT_CHANNELS,
        directIO,
        after: oneOf('after', v.after, ['resume', 'stop'] as const, 'resume'),
        live: v.live ?? false,
        force: v.force ?? false,
        digest: v.digest ?? false,
        json,
      };
    case 'restore':
      if (v.lazy && !v.launch) throw new UsageError('--lazy needs --launch: a lazy restore maps the RAM of a QEMU that vmsnap starts');
      if (v['no-prefetch'] && !v.lazy) throw new UsageError('--no-prefetch goes with --lazy');
      if (v.lazy && directIO === 'on') throw new UsageError("--lazy cannot be combined with --direct-io on: a lazy restore maps the file instead of reading it");
      return {
        kind: 'restore',
        in: required('in', v.in),
        qmp: required('qmp', v.qmp),
        channels: channelsOption(v.channels),
        directIO,
        launch: v.launch ?? false,
        lazy: v.lazy ?? false,
        prefetch: !v['no-prefetch'],
        paused: v.paused ?? false,
        verify: v.verify ?? false,
        json,
      };
    case 'inspect': {
      const file = parsed.positionals[0];
      if (!file) throw new UsageError('inspect needs a FILE');
      return { kind: 'inspect', file, verify: v.verify ?? false, json };
    }
    case 'daemon': {
      const extra = Object.keys(v).filter((k) => k !== 'config');
      if (extra.length > 0 || parsed.positionals.length > 0) {
        throw new UsageError(`daemon takes only --config FILE; got ${[...extra.map((k) => `--${k}`), ...parsed.positionals].join(' ')}`);
      }
      return { kind: 'daemon', config: v.config };
    }
    default:
      throw new UsageError(`unknown command '${verb}'`);
  }
}
