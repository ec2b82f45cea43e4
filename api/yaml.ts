// A deterministic YAML emitter for plain JSON data (what CRDs and manifests are). Strings are
// written plain only when no YAML 1.1/1.2 reader can take them for anything else; otherwise they
// are double-quoted JSON strings, which YAML reads back identically.

const RESERVED = /^(y|yes|n|no|true|false|on|off|null|~)$/i;
const PLAIN = /^[A-Za-z_/][A-Za-z0-9_./-]*$/;

function scalar(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`cannot write ${value} as YAML`);
    return String(value);
  }
  if (typeof value === 'string') return PLAIN.test(value) && !RESERVED.test(value) ? value : JSON.stringify(value);
  throw new Error(`cannot write a ${typeof value} as YAML`);
}

function isInline(value: unknown): boolean {
  if (Array.isArray(value)) return value.length === 0;
  if (value !== null && typeof value === 'object') return Object.values(value).every((v) => v === undefined);
  return true;
}

function inline(value: unknown): string {
  if (Array.isArray(value)) return '[]';
  if (value !== null && typeof value === 'object') return '{}';
  return scalar(value);
}

function block(value: unknown, indent: number): string[] {
  const pad = ' '.repeat(indent);
  const out: string[] = [];
  if (Array.isArray(value)) {
    for (const item of value) {
      if (isInline(item)) {
        out.push(`${pad}- ${inline(item)}`);
      } else {
        const inner = block(item, indent + 2);
        inner[0] = `${pad}- ${inner[0]!.slice(indent + 2)}`;
        out.push(...inner);
      }
    }
    return out;
  }
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    if (v === undefined) continue;
    if (isInline(v)) out.push(`${pad}${scalar(key)}: ${inline(v)}`);
    else out.push(`${pad}${scalar(key)}:`, ...block(v, indent + 2));
  }
  return out;
}

/** One YAML document (no leading `---`), ending with a newline. */
export function toYaml(value: unknown): string {
  if (isInline(value)) return `${inline(value)}\n`;
  return `${block(value, 0).join('\n')}\n`;
}
