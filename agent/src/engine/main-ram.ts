// Where a relaunch command line gets the VM's main RAM block from: a
// memory-backend -object with the block's id, or the machine's default RAM
// (-m alone). Lazy restores replace that backend with a file mapping (lazy/plan.ts);
// the bench's preallocated variant of an eager restore rewrites it (bench/prealloc.ts). Pure functions.
import { formatQemuOptions, getOption, parseQemuOptions, type QemuOptions } from './lazy/qemu-options.js';

export type MainRamBackend =
  /** `-object memory-backend-…,id=<block>`: argv[index] is its value. */
  | { kind: 'object'; index: number; type: string; options: QemuOptions }
  /** Only -m: QEMU makes the backend itself; an -object with the block's id and `-machine memory-backend=` can stand in. */
  | { kind: 'default' }
  | { kind: 'unknown'; reason: string };

export function isObjectFlag(arg: string): boolean {
  return arg === '-object' || arg === '--object';
}

export function isMachineFlag(arg: string): boolean {
  return arg === '-machine' || arg === '-M';
}

export function findMainRamBackend(argv: string[], blockId: string): MainRamBackend {
  let machineBackend: string | undefined;
  let found: MainRamBackend | undefined;
  for (let i = 1; i < argv.length - 1; i++) {
    const arg = argv[i]!;
    if (isMachineFlag(arg)) {
      const mb = getOption(parseQemuOptions(argv[i + 1]!, 'type'), 'memory-backend');
      if (mb !== undefined) machineBackend = mb;
    }
    if (arg === '-numa' && /(^|,)memdev=/.test(argv[i + 1]!)) {
      return { kind: 'unknown', reason: 'the VM spreads its RAM over NUMA memdevs (several RAM blocks, where one main block is needed)' };
    }
    if (!isObjectFlag(arg) || found) continue;
    let o: QemuOptions;
    try {
      o = parseQemuOptions(argv[i + 1]!, 'qom-type');
    } catch {
      return { kind: 'unknown', reason: `cannot read the -object option ${argv[i + 1]}` };
    }
    const type = getOption(o, 'qom-type') ?? '';
    if (type.startsWith('memory-backend-') && getOption(o, 'id') === blockId) found = { kind: 'object', index: i + 1, type, options: o };
  }
  if (found) return found;
  if (machineBackend !== undefined && machineBackend !== blockId) {
    return { kind: 'unknown', reason: `-machine memory-backend=${machineBackend} has no -object; the snapshot's main RAM block is ${blockId}` };
  }
  return { kind: 'default' };
}

/**
 * The argv with `options` as the main RAM block's backend: in place of the
 * VM's own -object, or added with `-machine memory-backend=<id>` for default RAM.
 */
export function withMainRamBackend(argv: string[], backend: Exclude<MainRamBackend, { kind: 'unknown' }>, options: QemuOptions, blockId: string): string[] {
  const value = formatQemuOptions(options, 'qom-type');
  if (backend.kind === 'default') return [...argv, '-object', value, '-machine', `memory-backend=${blockId}`];
  const out = [...argv];
  out[backend.index] = value;
  return out;
}
