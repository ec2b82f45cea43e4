// Bundles the vmsnap-agent CLI (after tsc) into dist/cli/, because start-up
// time is a lazy restore's critical path:
// - vmsnap-agent.js: an ESM bundle, one module per command instead of ~80
//   small ones (zod alone is ~50; Node's ESM loader pays per module). The
//   daemon runs from it; packages the engine never loads (the Kubernetes
//   client, logging, metrics) stay external, in node_modules.
// - engine.blob: a Node start-up snapshot of the engine commands (save,
//   restore, inspect) with everything evaluated, built by this very Node;
//   engine.blob.node records which Node that was, and bin/vmsnap-agent uses the
//   blob only with that Node. Without a blob it falls back to vmsnap-agent.js.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const BUNDLED = new Set(['zod']);
const external = Object.keys(pkg.dependencies).filter((d) => !BUNDLED.has(d));
const outdir = path.join(root, 'dist/cli');
fs.rmSync(outdir, { recursive: true, force: true });

await build({
  entryPoints: { 'vmsnap-agent': path.join(root, 'dist/agent/src/cli/main.js') },
  outdir,
  bundle: true,
  splitting: true, // dynamic imports stay lazy: each command loads only its own chunks
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external,
  // Bundled CommonJS dependencies call require().
  banner: { js: "import { createRequire as __vmsnapCreateRequire } from 'node:module'; const require = __vmsnapCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});

// The snapshot builder runs one CommonJS script, with no import.meta and only built-in modules.
const entry = path.join(outdir, 'engine-snapshot.cjs');
await build({
  entryPoints: [path.join(root, 'dist/agent/src/cli/snapshot-entry.js')],
  outfile: entry,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  external,
  define: { 'import.meta.url': 'globalThis.__vmsnapModuleUrl' },
  plugins: [
    {
      // The daemon is not part of the engine snapshot (it needs the external packages).
      name: 'daemon-stays-out',
      setup(b) {
        b.onResolve({ filter: /\/daemon\/daemon\.js$/ }, (a) => ({ path: a.path, external: true }));
      },
    },
  ],
  logLevel: 'error',
});
const blob = path.join(outdir, 'engine.blob');
try {
  execFileSync(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', entry], { stdio: ['ignore', 'ignore', 'pipe'], cwd: outdir });
  const node = fs.statSync(process.execPath);
  // What bin/vmsnap-agent compares with `stat -Lc '%s %Y'` of the node it finds.
  fs.writeFileSync(`${blob}.node`, `${node.size} ${Math.floor(node.mtimeMs / 1000)}\n`);
} catch (err) {
  fs.rmSync(blob, { force: true });
  process.stderr.write(`bundle-cli: no start-up snapshot (${String(err.stderr ?? err.message).trim().split('\n').pop()}); vmsnap-agent runs without it\n`);
}
