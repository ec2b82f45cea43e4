// The engine commands as a Node start-up snapshot: scripts/bundle-cli.mjs
// builds it, bin/vmsnap-agent runs it. Node then starts with this code
// compiled and its modules (zod and the schemas among them) already evaluated,
// which saves a restore about 40 ms before it can start QEMU. The daemon is
// not in it: it runs on plain Node (main.ts).
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import { main } from './commands.js';
// Imported statically so that they are evaluated into the snapshot; the
// commands' dynamic imports then find them ready.
import '../engine/save.js';
import '../engine/restore.js';
import '../engine/lazy/early-launch.js';
import '../snapshot-file/verify.js';
import '../snapshot-file/check-digests.js';
import './inspect.js';

declare global {
  // Stands in for import.meta.url in this bundle (scripts/bundle-cli.mjs): set at start, not at build.
  var __vmsnapModuleUrl: string;
}

v8.startupSnapshot.setDeserializeMainFunction(() => {
  // The blob lies in dist/cli, as the ESM bundle does: packageRoot() finds the checkout from it.
  const at = process.execArgv.indexOf('--snapshot-blob');
  globalThis.__vmsnapModuleUrl = pathToFileURL(path.resolve(at >= 0 ? process.execArgv[at + 1]! : 'dist/cli/engine.blob')).href;
  void main(process.argv.slice(1));
});
