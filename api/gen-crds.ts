// Writes crds/*.yaml, helm/vmsnap/crds/*.yaml and helm/vmsnap/values.schema.json from the zod
// schemas.  Usage: node dist/api/gen-crds.js [--check]
// --check writes nothing and exits 1 when a file is missing or differs (for CI).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generatedFiles } from './generated.js';

function repoRoot(): string {
  // Works from api/ (sources) and from dist/api/ (compiled).
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('gen-crds: cannot find package.json above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
  return dir;
}

function main(argv: string[]): number {
  const check = argv.includes('--check');
  const root = repoRoot();
  let stale = 0;
  for (const file of generatedFiles()) {
    const target = path.join(root, file.path);
    const current = existsSync(target) ? readFileSync(target, 'utf8') : undefined;
    if (current === file.content) continue;
    if (check) {
      console.error(`gen-crds: ${file.path} is ${current === undefined ? 'missing' : 'out of date'}`);
      stale++;
      continue;
    }
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, file.content);
    console.log(`gen-crds: wrote ${file.path}`);
  }
  if (check && stale > 0) {
    console.error('gen-crds: run `npm run gen:crds` and commit the result');
    return 1;
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
