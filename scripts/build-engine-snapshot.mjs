// Builds dist/cli/engine.blob, a Node start-up snapshot of the engine commands
// (save, restore, inspect: everything evaluated, zod and the schemas included),
// from dist/cli/engine-snapshot.cjs (scripts/bundle-cli.mjs). A blob works only
// with the node that built it: engine.blob.node has that node's mtime, and
// bin/vmsnap-agent uses the blob only when they match. Without a
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
  // bin/vmsnap-agent uses the blob only with a node of exactly this mtime (`test -nt`/`-ot`, no
  // subprocess); `touch -r` copies it to the nanosecond. The text is for people.
  fs.writeFileSync(`${blob}.node`, `built by ${process.execPath} ${process.version}\n`);
  execFileSync('touch', ['-r', process.execPath, `${blob}.node`]);
} catch (err) {
  fs.rmSync(blob, { force: true });
  fs.rmSync(`${blob}.node`, { force: true });
  process.stderr.write(`vmsnap: no start-up snapshot (${String(err.stderr ?? err.message).trim().split('\n').pop()}); vmsnap-agent runs without it\n`);
}
