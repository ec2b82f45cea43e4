// Bundles the vmsnap-agent CLI (after tsc) into dist/cli/, because start-up
// time is a lazy restore's critical path:
// - vmsnap-agent.js: an ESM bundle, one module per command instead of ~80
//   small ones (zod alone is ~50; Node's ESM loader pays per module). The
//   daemon runs from it; packages the engine never loads (the Kubernetes
//   client, logging, metrics) stay external, in node_modules.
// - engine-snapshot.cjs: the engine commands (save, restore, inspect) as one
//   script, from which build-engine-snapshot.mjs makes a Node start-up snapshot.
import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const BUNDLED = new Set(['zod']);
const external = Object.keys(pkg.dependencies).filter((d) => !BUNDLED.has(d));
const outdir = path.join(root, 'dist/cli');

/**
 * zod re-exports its 60-odd message locales as `z.locales`; vmsnap writes its
 * own English messages and never reads them. Only English stays in the bundles:
 * about 45% less code for every engine command to load.
 */
const englishOnlyZod = {
  name: 'english-only-zod',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (a) =>
      /[/\\]zod[/\\]v4[/\\](classic|core|mini)[/\\]/.test(a.importer) ? { path: path.join(path.dirname(a.importer), '../locales/en.js'), namespace: 'zod-locales' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (a) => ({ contents: `export { default as en } from ${JSON.stringify(a.path)};`, resolveDir: path.dirname(a.path) }));
  },
};
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
  plugins: [englishOnlyZod],
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
    englishOnlyZod,
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
// The blob itself: a separate step, so that an image can build it with its own node.
await import('./build-engine-snapshot.mjs');
