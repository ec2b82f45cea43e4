// Where the agent reads and writes on the node. Names are validated labels,
// but every path is still checked to stay under its root before use.
import fs from 'node:fs';
import path from 'node:path';
import { DNS1123_LABEL_MAX, DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN, snapshotFileName } from '../../../api/index.js';
import { VmsnapError } from '../errors.js';

const LABEL = new RegExp(DNS1123_LABEL_PATTERN);
const SUBDOMAIN = new RegExp(DNS1123_SUBDOMAIN_PATTERN);

function assertLabel(value: string, what: string): void {
  if (value.length > DNS1123_LABEL_MAX || !LABEL.test(value)) throw new PathError(`${what} "${value}" is not a DNS-1123 label`);
}

export class PathError extends VmsnapError {
  override name = 'PathError';
}

/** Is `p` strictly below `root` (lexically, after resolving `.` and `..`)? */
export function isUnder(root: string, p: string): boolean {
  const rel = path.relative(path.resolve(root), path.resolve(p));
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** Like isUnder, and also after resolving symlinks of the parts that exist. */
export function isReallyUnder(root: string, p: string): boolean {
  if (!isUnder(root, p)) return false;
  const realRoot = realpathOrSelf(root);
  let existing = path.resolve(p);
  let rest = '';
  while (!fs.existsSync(existing)) {
    rest = rest ? path.join(path.basename(existing), rest) : path.basename(existing);
    const parent = path.dirname(existing);
    if (parent === existing) break;
    existing = parent;
  }
  return isUnder(realRoot, path.join(realpathOrSelf(existing), rest));
}

function realpathOrSelf(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

export function assertUnder(root: string, p: string, what: string): string {
  if (!isReallyUnder(root, p)) throw new PathError(`${what} ${p} is not inside ${root}; refusing to use it`);
  return path.resolve(p);
}

/** `${storageRoot}/${namespace}/${name}-${uid}.vms`: never a user-supplied path. */
export function snapshotFilePath(storageRoot: string, snapshot: { metadata: { name?: string; namespace?: string; uid?: string } }): string {
  const ns = snapshot.metadata.namespace;
  if (!ns || !snapshot.metadata.name) throw new PathError('the VMSnapshot has no namespace or name');
  assertLabel(ns, 'namespace');
  // The API server allows only DNS-1123 subdomains as names; anything else did not come from it.
  const name = snapshot.metadata.name;
  if (name.length > DNS1123_SUBDOMAIN_MAX || !SUBDOMAIN.test(name)) throw new PathError(`the VMSnapshot name "${name}" is not a DNS-1123 subdomain`);
  const file = path.join(storageRoot, ns, snapshotFileName(snapshot));
  if (path.dirname(file) !== path.join(storageRoot, ns)) throw new PathError(`the snapshot file name ${path.basename(file)} is not a plain file name`);
  assertUnder(storageRoot, file, 'the snapshot file');
  return assertUnder(path.join(storageRoot, ns), file, 'the snapshot file');
}

/** The directory of VM `namespace/name`: `${vmRoot}/${namespace}/${name}`. */
export function vmDir(vmRoot: string, namespace: string, name: string): string {
  assertLabel(namespace, 'namespace');
  assertLabel(name, 'VM name');
  return assertUnder(path.join(vmRoot, namespace), path.join(vmRoot, namespace, name), 'the VM directory');
}
