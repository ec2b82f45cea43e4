import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The checkout's root, found from this module whether it runs from source or from dist/. */
export function packageRoot(): string {
  if (!root) {
    let dir = path.dirname(fileURLToPath(import.meta.url));
    while (!existsSync(path.join(dir, 'package.json')) || !existsSync(path.join(dir, 'agent/native'))) {
      const parent = path.dirname(dir);
      if (parent === dir) throw new Error('cannot find the vmsnap package root above ' + fileURLToPath(import.meta.url));
      dir = parent;
    }
    root = dir;
  }
  return root;
}
