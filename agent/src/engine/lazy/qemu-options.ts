// QEMU's option syntax for -object/-machine values: "type,key=value,..." where
// a comma inside a value is written ",,", or the JSON form "{...}" (-object only).
// Parsed into ordered key/value pairs so one property can change without
// disturbing the rest.

export interface QemuOptions {
  /** Ordered properties; the implied first key (e.g. qom-type) is stored under its name. */
  props: Array<[string, string]>;
  json: boolean;
}

/** Splits on single commas; ",," is a literal comma. */
function splitOptions(value: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === ',') {
      if (value[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      parts.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  parts.push(cur);
  return parts;
}

/** `impliedKey`: the name of a leading bare word (qom-type for -object, type for -machine). */
export function parseQemuOptions(value: string, impliedKey: string): QemuOptions {
  const trimmed = value.trim();
  if (trimmed.startsWith('{')) {
    const obj = JSON.parse(trimmed) as Record<string, unknown>;
    return { props: Object.entries(obj).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]), json: true };
  }
  const props: Array<[string, string]> = [];
  splitOptions(value).forEach((part, i) => {
    if (part === '') return;
    const eq = part.indexOf('=');
    if (eq < 0) props.push(i === 0 ? [impliedKey, part] : [part, 'on']);
    else props.push([part.slice(0, eq), part.slice(eq + 1)]);
  });
  return { props, json: false };
}

export function getOption(o: QemuOptions, key: string): string | undefined {
  return o.props.find(([k]) => k === key)?.[1];
}

/** Sets (or appends) a property, keeping the order of the others. */
export function setOption(o: QemuOptions, key: string, value: string): void {
  const at = o.props.findIndex(([k]) => k === key);
  if (at >= 0) o.props[at] = [key, value];
  else o.props.push([key, value]);
}

export function deleteOption(o: QemuOptions, key: string): void {
  o.props = o.props.filter(([k]) => k !== key);
}

/** Numeric JSON values (size, offset) are written back as numbers. */
export function formatQemuOptions(o: QemuOptions, impliedKey: string): string {
  if (o.json) {
    return JSON.stringify(Object.fromEntries(o.props.map(([k, v]) => [k, /^\d+$/.test(v) ? Number(v) : v === 'true' ? true : v === 'false' ? false : v])));
  }
  return o.props.map(([k, v]) => (k === impliedKey ? v : `${k}=${v}`).replace(/,/g, ',,')).join(',');
}

/** QEMU's boolean spellings. */
export function isOn(value: string | undefined): boolean {
  return value !== undefined && ['on', 'yes', 'true', 'y'].includes(value.toLowerCase());
}
