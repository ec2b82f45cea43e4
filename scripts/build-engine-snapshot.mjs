// Builds dist/cli/engine.blob, a Node start-up snapshot of the engine commands
// (save, restore, inspect: everything evaluated, zod and the schemas included),
// from dist/cli/engine-snapshot.cjs (scripts/bundle-cli.mjs). A blob works only
// with the node that built it: engine.blob.node records that node's size and
// mtime, and bin/vmsnap-agent uses the blob only when they match. Without a
// blob the launcher runs the plain bundle, so a failure here is a warning.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/cli');
const blob = path.join(cli, 'engine.blob');
try {
  execFileSync(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', path.join(cli, 'engine-snapshot.cjs')], {
    stdio: ['ignore', 'ignore', 'pipe'],
    cwd: cli,
  });
  const node = fs.statSync(process.execPath);
  // What bin/vmsnap-agent compares with `stat -Lc '%s %Y'` of the node it finds.
  fs.writeFileSync(`${blob}.node`, `${node.size} ${Math.floor(node.mtimeMs / 1000)}\n`);
} catch (err) {
  fs.rmSync(blob, { force: true });
  fs.rmSync(`${blob}.node`, { force: true });
  process.stderr.write(`vmsnap: no start-up snapshot (${String(err.stderr ?? err.message).trim().split('\n').pop()}); vmsnap-agent runs without it\n`);
}
