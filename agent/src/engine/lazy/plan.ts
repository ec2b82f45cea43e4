// Whether a snapshot can be restored lazily, and the QEMU command line that
// does it: the main RAM block becomes a private, copy-on-write mapping of the
// snapshot file's page region (memory-backend-file, readonly=on, rom=off), so
// the VM runs at once and its pages fault in from the file. Pure functions.
import {
  deleteOption,
  formatQemuOptions,
  getOption,
  isOn,
  parseQemuOptions,
  setOption,
  type QemuOptions,
} from './qemu-options.js';
import { findMainRamBackend, isObjectFlag, withMainRamBackend } from '../main-ram.js';

/** Where the main RAM block's pages lie in the snapshot file. */
export interface LazyBacking {
  file: string;
  blockId: string;
  /** The block's used length: the backend's size. */
  size: number;
  /** The block's pages_offset (1 MiB-aligned). */
  offset: number;
}

export type LazyArgvPlan = { lazy: true; argv: string[] } | { lazy: false; reason: string };

const FILE_BACKEND_PROPS = ['mem-path', 'offset', 'readonly', 'rom', 'align', 'discard-data', 'pmem'];

function refuseDevices(argv: string[]): string | undefined {
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-mem-path') return `the VM's RAM lives in files under ${argv[i + 1]} (-mem-path, usually hugepages): it cannot be mapped from the snapshot`;
    if (/vhost-user/.test(arg)) return 'the VM has a vhost-user device, which needs shared guest RAM';
    if (/(^|[,=\s])vfio/.test(arg)) return 'the VM has a VFIO device, which pins all guest RAM';
  }
  return undefined;
}

/** The backend a lazy restore puts in place of the main RAM block. */
function lazyBackend(base: QemuOptions | undefined, b: LazyBacking): QemuOptions {
  const o: QemuOptions = base ?? { props: [], json: false };
  setOption(o, 'qom-type', 'memory-backend-file');
  setOption(o, 'id', b.blockId);
  setOption(o, 'size', String(b.size));
  setOption(o, 'mem-path', b.file);
  setOption(o, 'offset', String(b.offset));
  // readonly=on opens the file O_RDONLY; rom=off still maps it writable, and
  // share=off makes that mapping private: guest writes copy the page, the file never changes.
  setOption(o, 'share', o.json ? 'false' : 'off');
  setOption(o, 'readonly', o.json ? 'true' : 'on');
  setOption(o, 'rom', o.json ? 'false' : 'off');
  // Would read every page before the VM runs (an eager restore of this VM may have added them).
  deleteOption(o, 'prealloc');
  deleteOption(o, 'prealloc-threads');
  return o;
}

/**
 * The relaunch command line (already pointed at the target's socket, with
 * -incoming defer) with the main RAM block mapped from the snapshot, or why not.
 */
export function planLazyArgv(argv: string[], b: LazyBacking): LazyArgvPlan {
  const refused = refuseDevices(argv);
  if (refused) return { lazy: false, reason: refused };
  const backend = findMainRamBackend(argv, b.blockId);
  if (backend.kind === 'unknown') return { lazy: false, reason: backend.reason };
  if (backend.kind === 'default') return { lazy: true, argv: withMainRamBackend(argv, backend, lazyBackend(undefined, b), b.blockId) };
  const { type, options: o } = backend;
  if (type === 'memory-backend-memfd') return { lazy: false, reason: `the VM's RAM is shared memory (${type})` };
  if (type === 'memory-backend-file') {
    return { lazy: false, reason: `the VM keeps its RAM in a file (${type}, mem-path=${getOption(o, 'mem-path')}): it is shared with whoever uses that file` };
  }
  if (type !== 'memory-backend-ram') return { lazy: false, reason: `the VM's RAM backend ${type} cannot be replaced by a file mapping` };
  if (isOn(getOption(o, 'share'))) return { lazy: false, reason: `the VM's RAM is shared (${type} share=on)` };
  return { lazy: true, argv: withMainRamBackend(argv, backend, lazyBackend(o, b), b.blockId) };
}

/**
 * The -object values that map a file private and copy-on-write the way a lazy
 * restore does (memory-backend-file, readonly=on, rom=off, not shared).
 */
function* fileMappings(argv: string[]): Generator<{ index: number; options: QemuOptions; file: string }> {
  for (let i = 1; i < argv.length - 1; i++) {
    if (!isObjectFlag(argv[i]!)) continue;
    let o: QemuOptions;
    try {
      o = parseQemuOptions(argv[i + 1]!, 'qom-type');
    } catch {
      continue;
    }
    const file = getOption(o, 'mem-path');
    if (getOption(o, 'qom-type') !== 'memory-backend-file' || !file || !isOn(getOption(o, 'readonly'))) continue;
    if (isOn(getOption(o, 'rom') ?? 'on') || isOn(getOption(o, 'share'))) continue;
    yield { index: i + 1, options: o, file };
  }
}

/** The snapshot mapping of a lazily restored VM's command line: its file and size. */
export function lazyBackingOf(argv: string[]): { file: string; size: number } | undefined {
  for (const m of fileMappings(argv)) {
    const size = Number(getOption(m.options, 'size'));
    if (Number.isInteger(size)) return { file: m.file, size };
  }
  return undefined;
}

/**
 * The command line to record for a VM that runs lazily restored: its RAM
 * mapped from a snapshot becomes plain anonymous RAM again (same id and size),
 * so a later restore never depends on, nor loads on top of, that older file.
 */
export function eagerArgv(argv: string[], isSnapshotFile: (path: string) => boolean): string[] {
  const out = [...argv];
  for (const m of fileMappings(argv)) {
    if (!isSnapshotFile(m.file)) continue;
    setOption(m.options, 'qom-type', 'memory-backend-ram');
    for (const p of [...FILE_BACKEND_PROPS, 'share']) deleteOption(m.options, p);
    out[m.index] = formatQemuOptions(m.options, 'qom-type');
  }
  return out;
}
