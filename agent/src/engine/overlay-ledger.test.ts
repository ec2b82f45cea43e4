import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OverlayLedger } from './overlay-ledger.js';
import { mergeIntoBase, MergeError } from './disk-merge.js';
import type { QmpClient } from '../qmp/client.js';

let dir: string;
let storage: string;
let vmDir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-ledger-'));
  storage = path.join(dir, 'storage');
  vmDir = path.join(dir, 'vms', 'ns', 'vm');
  fs.mkdirSync(storage, { mode: 0o700 });
  fs.mkdirSync(vmDir, { recursive: true });
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const overlay = (name = 'disk.raw.vmsnap-abc.qcow2') => {
  const f = path.join(vmDir, name);
  fs.writeFileSync(f, 'QFI\xfb');
  return f;
};

/** A QEMU that reports `top` as its disk's active layer above `base` (the tenant's word). */
function fakeQemu(top: string, base: string): QmpClient & { calls: string[] } {
  const calls: string[] = [];
  const image = { filename: top, format: 'qcow2', 'virtual-size': 1 << 20, 'backing-image': { filename: base, format: 'raw', 'virtual-size': 1 << 20 } };
  return {
    calls,
    async execute(cmd: string) {
      calls.push(cmd);
      if (cmd === 'query-block') return [{ device: 'd0', inserted: { ro: false, drv: 'qcow2', image } }];
      if (cmd === 'query-named-block-nodes') return [{ 'node-name': 'b', file: base, drv: 'raw' }];
      if (cmd === 'query-block-jobs') return [];
      return {};
    },
  } as unknown as QmpClient & { calls: string[] };
}

describe('the overlay ledger', () => {
  it('deletes an overlay it recorded, once, and remembers across agent restarts', () => {
    const f = overlay();
    expect(OverlayLedger.forStorageRoot(storage).record(f, 'freeze')).toBeUndefined();
    const again = OverlayLedger.forStorageRoot(storage); // a new agent process reads the file
    expect(again.owns(f)).toBe(true);
    expect(again.remove(f)).toEqual({ removed: true });
    expect(fs.existsSync(f)).toBe(false);
    expect(OverlayLedger.forStorageRoot(storage).owns(f)).toBe(false);
    const st = fs.statSync(path.join(storage, '.vmsnap', 'overlays.jsonl'));
    expect(st.mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(storage, '.vmsnap')).mode & 0o777).toBe(0o700);
  });

  it('attack: a file the agent did not create, reported by QEMU as its top layer, is not deleted', async () => {
    const ledger = OverlayLedger.forStorageRoot(storage);
    const hostFile = path.join(dir, 'host.vmsnap-x.qcow2'); // even with vmsnap's name pattern
    fs.writeFileSync(hostFile, 'precious');
    expect(ledger.remove(hostFile)).toEqual({ removed: false, why: `${hostFile} is not an overlay this agent created (not in its ledger)` });
    const qemu = fakeQemu(hostFile, path.join(vmDir, 'disk.raw'));
    await expect(mergeIntoBase(qemu, { device: 'd0', base: path.join(vmDir, 'disk.raw'), baseFormat: 'raw', top: hostFile }, ledger)).rejects.toThrow(
      new MergeError(`disk d0: ${hostFile} is not an overlay this agent created (not in its ledger); it is not merged away`),
    );
    expect(qemu.calls).toEqual([]); // refused before QEMU was asked anything
    expect(fs.readFileSync(hostFile, 'utf8')).toBe('precious');
  });

  /** A recorded overlay whose name the tenant then points at a host file with `plant` (symlinkSync, linkSync). */
  function swapped(plant: (target: string, name: string) => void) {
    const ledger = OverlayLedger.forStorageRoot(storage);
    const f = overlay();
    ledger.record(f, 'restore');
    const hostFile = path.join(dir, 'host-file');
    fs.writeFileSync(hostFile, 'precious');
    fs.rmSync(f);
    plant(hostFile, f);
    return { ledger, f, hostFile };
  }

  it('attack: a symlink swapped in place of a recorded overlay is not followed, nor removed', () => {
    const { ledger, f, hostFile } = swapped(fs.symlinkSync);
    expect(ledger.remove(f)).toEqual({ removed: false, why: `${f} is now a symlink, not the overlay the agent created` });
    expect(fs.readFileSync(hostFile, 'utf8')).toBe('precious');
    expect(fs.lstatSync(f).isSymbolicLink()).toBe(true);
  });

  it('attack: another file (a hard link to a host file) put under the recorded name is not removed', () => {
    const { ledger, f } = swapped(fs.linkSync);
    expect(ledger.remove(f)).toMatchObject({ removed: false, why: expect.stringMatching(/no longer the file the agent created/) });
    expect(fs.existsSync(f)).toBe(true);
  });

  it('attack: a directory of the recorded path swapped for a symlink is not followed', () => {
    const ledger = OverlayLedger.forStorageRoot(storage);
    const f = overlay();
    ledger.record(f, 'restore');
    const elsewhere = path.join(dir, 'elsewhere');
    fs.renameSync(vmDir, elsewhere);
    fs.symlinkSync(elsewhere, vmDir);
    expect(ledger.remove(f)).toMatchObject({ removed: false, why: expect.stringMatching(/reached through a symlink/) });
    expect(fs.existsSync(path.join(elsewhere, path.basename(f)))).toBe(true);
  });

  it('refuses to record anything but a plain file', () => {
    const ledger = OverlayLedger.inMemory();
    const link = path.join(vmDir, 'l.qcow2');
    fs.symlinkSync('/etc/hostname', link);
    expect(ledger.record(link, 'freeze')).toBe(`${link} is not a regular file`);
    expect(ledger.owns(link)).toBe(false);
  });

  it("refuses a private directory that is a symlink or open to others", () => {
    const s2 = path.join(dir, 's2');
    fs.mkdirSync(s2);
    fs.mkdirSync(path.join(dir, 'x'), { mode: 0o700 });
    fs.symlinkSync(path.join(dir, 'x'), path.join(s2, '.vmsnap'));
    expect(() => OverlayLedger.forStorageRoot(s2)).toThrow(/\.vmsnap must be a directory owned by the agent .* it is a symlink/);
    fs.rmSync(path.join(s2, '.vmsnap'));
    fs.mkdirSync(path.join(s2, '.vmsnap'));
    fs.chmodSync(path.join(s2, '.vmsnap'), 0o755);
    expect(() => OverlayLedger.forStorageRoot(s2)).toThrow(/mode 755/);
  });
});
