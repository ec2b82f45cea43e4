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

describe('hostile names never reach the filesystem', () => {
  const uid = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
  const snap = (namespace: string, name: string, u = uid) => ({ metadata: { namespace, name, uid: u } });

  it.each([
    ['..', 'x'],
    ['.', 'x'],
    ['a/b', 'x'],
    ['', 'x'],
    ['team-a', '..'],
    ['team-a', '../team-b/x'],
    ['team-a', '/etc/passwd'],
    ['team-a', 'a/../../b'],
    ['team-a', 'x\u0000y'],
    ['team-a', 'x\ny'],
    ['team-a', 'Upper'],
    ['team-a', 'snap shot'],
    ['team-a', 'ü'],
    ['team-a', '-leading'],
    ['team-a', 'a'.repeat(254)],
    ['a'.repeat(64), 'x'],
    ['Team-A', 'x'],
  ])('snapshot file of namespace %j, name %j: refused', (namespace, name) => {
    expect(() => snapshotFilePath('/snaps', snap(namespace, name))).toThrow(PathError);
  });

  it('a uid is reduced to hex digits, so it cannot carry a path either', () => {
    expect(snapshotFilePath('/snaps', snap('team-a', 'x', '../../etc/passwd'))).toBe('/snaps/team-a/x-ecad.vms');
    expect(snapshotFilePath('/snaps', snap('team-a', 'x', '/'))).toBe('/snaps/team-a/x-nouid.vms');
  });

  it('the longest name the API server accepts (253 characters) gives a file name the filesystem takes', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-paths-'));
    try {
      const names = ['a'.repeat(253), `${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.${'e'.repeat(61)}`];
      const files = names.map((name) => snapshotFilePath(root, snap('n'.repeat(63), name)));
      for (const file of files) {
        expect(path.dirname(file)).toBe(path.join(root, 'n'.repeat(63)));
        expect(Buffer.byteLength(path.basename(file))).toBeLessThanOrEqual(255);
        fs.mkdirSync(path.dirname(file), { recursive: true });
        fs.writeFileSync(file, 'x'); // no ENAMETOOLONG
      }
      // Two long names with the same first 200 characters stay apart by their uids.
      const other = snapshotFilePath(root, snap('n'.repeat(63), `${'a'.repeat(252)}b`, 'ffffffff-0000-0000-0000-000000000000'));
      expect(other).not.toBe(files[0]);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it.each(['..', '.', 'a/b', '../x', 'x/..', '', 'A', 'a'.repeat(64), 'a\u0000'])('VM directory with a hostile part %j: refused', (bad) => {
    expect(() => vmDir('/vms', bad, 'demo')).toThrow(PathError);
    expect(() => vmDir('/vms', 'default', bad)).toThrow(PathError);
  });
});
