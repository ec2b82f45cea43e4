import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dropReplacedLayers, topLayers } from './disk-layers.js';
import { OverlayLedger } from '../engine/index.js';
import type { AgentContext } from './context.js';
import type { QmpClient } from '../qmp/client.js';

let dir: string;
let ctx: AgentContext;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-layers-'));
  fs.mkdirSync(path.join(dir, 'storage'), { mode: 0o700 });
  fs.mkdirSync(path.join(dir, 'vms', 'ns', 'vm'), { recursive: true });
  ctx = { config: { storageRoot: path.join(dir, 'storage'), vmRoot: path.join(dir, 'vms') } } as unknown as AgentContext;
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The replaced VM's QEMU answering query-block with whatever top layers it likes. */
const reporting = (tops: string[]) =>
  ({
    execute: async () => tops.map((t, i) => ({ device: `d${i}`, inserted: { ro: false, drv: 'qcow2', image: { filename: t, format: 'qcow2', 'virtual-size': 1 } } })),
  }) as unknown as QmpClient;

it("attack: after a Replace, only the agent's own overlays go; a file a QEMU reports as its top layer stays", async () => {
  const ours = path.join(dir, 'vms', 'ns', 'vm', 'disk.raw.vmsnap-aaa.qcow2');
  const planted = path.join(dir, 'host.vmsnap-bbb.qcow2'); // vmsnap's name, not vmsnap's file
  fs.writeFileSync(ours, 'x');
  fs.writeFileSync(planted, 'precious');
  OverlayLedger.forStorageRoot(ctx.config.storageRoot).record(ours, 'restore');
  const tops = await topLayers(reporting([ours, planted, '/etc/hostname']));
  expect(dropReplacedLayers(ctx, tops)).toEqual([ours]);
  expect(fs.existsSync(ours)).toBe(false);
  expect(fs.readFileSync(planted, 'utf8')).toBe('precious');
});
