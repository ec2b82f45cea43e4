// Builds the addon with node-gyp against the installed Node's own headers,
// so node-gyp never tries to download them (our machines have no internet).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const prefix = path.resolve(path.dirname(process.execPath), '..');
const args = ['rebuild', `--directory=${path.dirname(new URL(import.meta.url).pathname)}`];
if (existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`);
const gyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' });
process.exit(r.status ?? 1);
