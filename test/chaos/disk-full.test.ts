// A save into a filesystem too small for the guest's RAM: the operation fails
// with the cause in its message, the VM runs on, and no partial file remains.
// Through the operator and agent (VMSnapshot), the CLI, and the engine directly.
import fs from 'node:fs';
import path from 'node:path';
import { saveVm } from '../../agent/src/engine/save.js';
import { createNamespace, kubectlOk } from '../../stack/controlplane.js';
import { apply, waitForPhase } from '../e2e/objects.js';
import { startStack, tearDownStack, type Stack } from '../../stack/e2e.js';
import { cli, readyGuest, scratchDir } from '../engine/harness.js';
import type { Guest } from '../../kit/guest.js';
import { snapshotFilesUnder, vmStatus } from './invariants.js';
import { mountSmallFs, type SmallFs } from './small-fs.js';
import { expectVerifying } from '../../kit/guest.js';
import { vmSnapshot } from '../../kit/manifests.js';

/** Smaller than the RAM the guest has filled (96 MiB of pattern). */
const FS_MIB = 64;
const NO_SPACE = /no space left on device|ENOSPC/i;
/** What the user must do about it. */
const FREE_SPACE = /free space for \S+: it needs up to 192Mi/;

let stack: Stack | undefined;
let small: SmallFs | undefined;
let scratch: string;
const guests: Guest[] = [];

beforeAll(() => {
  scratch = scratchDir('disk-full');
  small = mountSmallFs(scratch, FS_MIB);
  console.log(`disk full: a ${FS_MIB} MiB ${small.kind} at ${small.dir}`);
});

afterAll(async () => {
  await tearDownStack(stack, guests);
  small?.unmount();
  fs.rmSync(scratch, { recursive: true, force: true });
}, 5 * 60 * 1000);

async function fullGuest(dir: string, name: string): Promise<Guest> {
  const g = await readyGuest({ dir, name, memMiB: 192, fillMiB: 96, seed: 9 });
  guests.push(g);
  return g;
}

it('VMSnapshot: Failed with the cause, a Warning event, the VM running and intact, no partial file', async () => {
  stack = await startStack([]);
  const storageRoot = path.join(small!.dir, 'snapshots');
  const agent = await stack.startAgent('node-full', { storageRoot });
  const ns = await createNamespace('chaos-full');
  const guest = await fullGuest(path.join(agent.vmRoot, ns, 'big'), 'big');
  const pass = guest.lastPass();
  await apply(vmSnapshot('full', { vmName: 'big', failureDeadline: '2m' }), ns);
  const snap = await waitForPhase('vmsnapshot/full', ns, 'Failed', 150_000);
  console.log(`disk full, VMSnapshot: ${snap.status.error.message}`);
  expect(snap.status.error.message).toMatch(NO_SPACE);
  expect(snap.status.error.message).toMatch(FREE_SPACE);
  expect(snap.status.conditions.find((c: { type: string }) => c.type === 'Ready')).toMatchObject({ status: 'False' });
  const events = JSON.parse(await kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=full', '-o', 'json'])).items as Array<{
    type: string;
    reason: string;
    message: string;
  }>;
  expect(events.filter((e) => e.type === 'Warning' && e.reason === 'SaveFailed').map((e) => e.message)).toEqual([expect.stringMatching(NO_SPACE)]);
  expect(await vmStatus(guest.qmpPath)).toBe('running');
  await expectVerifying(guest.serialPath, { after: pass });
  expect(fs.existsSync(snap.status.file.path)).toBe(false);
  expect(snapshotFilesUnder(storageRoot)).toEqual([]);
});

it('CLI save: exit code 1 with the cause on stderr, the VM resumed, no partial file', async () => {
  const guest = await fullGuest(path.join(scratch, 'cli-vm'), 'cli-vm');
  const pass = guest.lastPass();
  const out = path.join(small!.dir, 'cli.vms');
  const r = await cli(['save', '--qmp', guest.qmpPath, '--out', out, '--channels', '2']);
  console.log(`disk full, CLI: ${r.stderr.trim()}`);
  expect(r.code).toBe(1);
  expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(NO_SPACE)]);
  expect(r.stderr).toMatch(FREE_SPACE);
  expect(fs.existsSync(out)).toBe(false);
  expect(await vmStatus(guest.qmpPath)).toBe('running');
  await expectVerifying(guest.serialPath, { after: pass });

  // Live capture, through the engine itself: the same outcome.
  const live = path.join(small!.dir, 'live.vms');
  await expect(saveVm({ qmpSocket: guest.qmpPath, outPath: live, channels: 2, directIO: 'auto', after: 'resume', live: true })).rejects.toThrow(NO_SPACE);
  expect(fs.existsSync(live)).toBe(false);
  expect(await vmStatus(guest.qmpPath)).toBe('running');
  // Nothing left on the small filesystem but what mkfs put there.
  expect(snapshotFilesUnder(small!.dir).filter((f) => !f.includes('lost+found'))).toEqual([]);
});

it('a filesystem already full: even our header cannot be written; same outcome', async () => {
  const guest = guests.at(-1) ?? (await fullGuest(path.join(scratch, 'cli-vm'), 'cli-vm'));
  const filler = path.join(small!.dir, 'filler');
  const fd = fs.openSync(filler, 'w');
  // Fill every block: big writes until ENOSPC, then small ones for the rest.
  for (const size of [1 << 20, 4096, 1]) {
    const chunk = Buffer.alloc(size, 1);
    try {
      for (;;) fs.writeSync(fd, chunk);
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
  }
  fs.closeSync(fd);
  const out = path.join(small!.dir, 'nothing-fits.vms');
  const r = await cli(['save', '--qmp', guest.qmpPath, '--out', out]);
  fs.rmSync(filler);
  console.log(`disk full before the save, CLI: ${r.stderr.trim()}`);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(NO_SPACE);
  expect(r.stderr).toMatch(FREE_SPACE);
  expect(fs.existsSync(out)).toBe(false);
  expect(await vmStatus(guest.qmpPath)).toBe('running');
});
