import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PathError, assertUnder, isReallyUnder, isUnder, snapshotFilePath, vmDir } from './paths.js';

describe('path containment', () => {
  it('isUnder is strict and lexical', () => {
    expect(isUnder('/data', '/data/a/b')).toBe(true);
    expect(isUnder('/data/', '/data/a')).toBe(true);
    expect(isUnder('/data', '/data')).toBe(false);
    expect(isUnder('/data', '/data/../etc/passwd')).toBe(false);
    expect(isUnder('/data', '/database/x')).toBe(false);
    expect(isUnder('/data', '/data/a/../../x')).toBe(false);
  });

  it('isReallyUnder sees through symlinks', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-paths-'));
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-outside-'));
    try {
      fs.mkdirSync(path.join(root, 'ns'));
      fs.symlinkSync(outside, path.join(root, 'escape'));
      expect(isReallyUnder(root, path.join(root, 'ns', 'file.vms'))).toBe(true);
      expect(isReallyUnder(root, path.join(root, 'new-ns', 'file.vms'))).toBe(true);
      expect(isReallyUnder(root, path.join(root, 'escape', 'file.vms'))).toBe(false);
      expect(() => assertUnder(root, path.join(root, 'escape', 'x'), 'the file')).toThrow(PathError);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
      fs.rmSync(outside, { recursive: true, force: true });
    }
  });

  it('names snapshot files from namespace, name and uid only', () => {
    const snap = { metadata: { namespace: 'team-a', name: 'before-upgrade', uid: '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0' } };
    expect(snapshotFilePath('/snaps', snap)).toBe('/snaps/team-a/before-upgrade-0f1e2d3c4b5a.vms');
    expect(() => snapshotFilePath('/snaps', { metadata: { namespace: '..', name: 'x', uid: 'ab' } })).toThrow(PathError);
    expect(() => snapshotFilePath('/snaps', { metadata: { name: 'x' } })).toThrow(/no namespace/);
  });

  it('keeps VM directories inside their namespace', () => {
    expect(vmDir('/vms', 'default', 'demo')).toBe('/vms/default/demo');
    expect(() => vmDir('/vms', 'default', '../other/demo')).toThrow(PathError);
  });
});
