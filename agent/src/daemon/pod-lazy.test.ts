import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { closedDirectoryAbove, openSnapshotForPod, snapshotFileMode } from './pod-lazy.js';

describe('a snapshot file for a VM pod\'s lazy restore', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'pod-lazy-'));
    fs.chmodSync(root, 0o755);
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('is 0644 only below a directory of the agent closed to others', () => {
    const file = path.join(root, 'ns', 'snap.vmsnap');
    fs.mkdirSync(path.dirname(file), { mode: 0o755 });
    expect(closedDirectoryAbove(root, file)).toMatch(/no directory between .* with mode 0700/);
    expect(snapshotFileMode(root, file)).toBe(0o600);
    fs.chmodSync(path.dirname(file), 0o700);
    expect(closedDirectoryAbove(root, file)).toBeUndefined();
    expect(snapshotFileMode(root, file)).toBe(0o644);
    expect(closedDirectoryAbove(root, '/etc/passwd')).toMatch(/not under the storage root/);
  });

  it('is opened read-only and made 0644 when saved 0600 before; refused in an open directory', () => {
    const dir = path.join(root, 'ns');
    fs.mkdirSync(dir, { mode: 0o700 });
    const file = path.join(dir, 'snap.vmsnap');
    fs.writeFileSync(file, 'x', { mode: 0o600 });
    const opened = openSnapshotForPod(root, file);
    expect('fd' in opened).toBe(true);
    if ('fd' in opened) fs.closeSync(opened.fd);
    expect(fs.statSync(file).mode & 0o777).toBe(0o644);
    fs.chmodSync(dir, 0o755);
    expect(openSnapshotForPod(root, file)).toEqual({ reason: expect.stringMatching(/mode 0700/) });
    fs.symlinkSync('/etc/hostname', path.join(root, 'link'));
    fs.chmodSync(dir, 0o700);
    expect(openSnapshotForPod(root, path.join(root, 'link'))).toEqual({ reason: expect.stringMatching(/mode 0700/) });
  });
});
