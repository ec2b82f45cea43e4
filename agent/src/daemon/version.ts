import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../package-root.js';

/** The agent's version, from package.json (reported in the VMInventory). */
export function agentVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version.slice(0, 64) : 'unknown';
  } catch {
    return 'unknown';
  }
}
