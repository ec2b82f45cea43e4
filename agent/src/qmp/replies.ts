// The shapes of the QMP replies vmsnap relies on, checked as they arrive so
// that a misbehaving QEMU gives a clear error naming the command and the
// field, never a TypeError deep in the engine (or a save reported good on
// numbers that were not numbers). Hand-written rather than zod: the save CLI
// does not load zod (start-up time counts in the benchmark).

type Kind = 'string' | 'number' | 'boolean' | 'object' | 'array';
/** A field's kind; a trailing '?' makes it optional. Nested objects get their own Shape. */
type Shape = { [field: string]: `${Kind}` | `${Kind}?` | Shape };

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'number' && !Number.isFinite(v) ? 'non-finite number' : typeof v;
}

function describe(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  if (v === null || v === undefined) return String(v);
  return `${kindOf(v)} ${text.length > 60 ? `${text.slice(0, 60)}...` : text}`;
}

/** The first problem of `value` against `shape`, or undefined. */
function check(value: unknown, shape: Shape, at: string): string | undefined {
  if (kindOf(value) !== 'object') return `${at || 'the reply'} should be an object, got ${describe(value)}`;
  const obj = value as Record<string, unknown>;
  for (const [field, spec] of Object.entries(shape)) {
    const path = at ? `${at}.${field}` : field;
    const v = obj[field];
    if (typeof spec === 'object') {
      if (v === undefined) continue; // nested objects are optional in every reply we check
      const problem = check(v, spec, path);
      if (problem) return problem;
      continue;
    }
    const optional = spec.endsWith('?');
    const kind = spec.replace('?', '');
    if (v === undefined) {
      if (optional) continue;
      return `'${path}' is missing`;
    }
    if (kindOf(v) !== kind) return `'${path}' should be a ${kind}, got ${describe(v)}`;
  }
  return undefined;
}

function checkList(value: unknown, item: Shape): string | undefined {
  if (!Array.isArray(value)) return `the reply should be an array, got ${describe(value)}`;
  for (const [i, v] of value.entries()) {
    const problem = check(v, item, `[${i}]`);
    if (problem) return problem;
  }
  return undefined;
}

const migrationRam: Shape = { transferred: 'number', total: 'number', remaining: 'number' };

const CHECKS: Record<string, (reply: unknown, args: Record<string, unknown>) => string | undefined> = {
  'query-status': (r) => check(r, { status: 'string', running: 'boolean' }, ''),
  'query-migrate': (r) => check(r, { status: 'string?', 'error-desc': 'string?', downtime: 'number?', 'total-time': 'number?', ram: migrationRam }, ''),
  'query-memory-size-summary': (r) => check(r, { 'base-memory': 'number', 'plugged-memory': 'number?' }, ''),
  'query-migrate-capabilities': (r) => checkList(r, { capability: 'string', state: 'boolean' }),
  'query-migrate-parameters': (r) => check(r, {}, ''),
  'query-machines': (r) => checkList(r, { name: 'string', 'default-ram-id': 'string?' }),
  'query-fdsets': (r) => checkList(r, { 'fdset-id': 'number', fds: 'array' }),
  'add-fd': (r) => check(r, { 'fdset-id': 'number', fd: 'number' }, ''),
  // The disks a save freezes and a restore protects (engine/disks.ts).
  'query-block': (r) =>
    checkList(r, { device: 'string', inserted: { ro: 'boolean', drv: 'string', image: { filename: 'string', format: 'string' } } }),
  'qom-get': (r, args) => (args.property === 'type' && typeof r !== 'string' ? `the type should be a string, got ${describe(r)}` : undefined),
};

/** Why `reply` is not what `command` should return, or undefined when it is (or the command is not one we check). */
export function replyProblem(command: string, reply: unknown, args: Record<string, unknown> = {}): string | undefined {
  return CHECKS[command]?.(reply, args);
}
