import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HEADER_KEY_BYTES, headerKeyPath, nodeHeaderKey } from './header-key.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-key-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("the node's header key", () => {
  it('is created once, 0600 in a 0700 directory, and read back the same', () => {
    const root = path.join(dir, 'a');
    fs.mkdirSync(root);
    const key = nodeHeaderKey(root);
    expect(key.length).toBe(HEADER_KEY_BYTES);
    const file = headerKeyPath(root);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(fs.readFileSync(file).equals(key)).toBe(true);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['header.key']); // no temporary left
  });

  it('refuses a key file that is a symlink (a planted key would let anyone sign headers)', () => {
    const root = path.join(dir, 'b');
    fs.mkdirSync(path.join(root, '.vmsnap'), { recursive: true, mode: 0o700 });
    fs.chmodSync(path.join(root, '.vmsnap'), 0o700);
    const planted = path.join(dir, 'planted');
    fs.writeFileSync(planted, Buffer.alloc(HEADER_KEY_BYTES), { mode: 0o600 });
    fs.symlinkSync(planted, headerKeyPath(root));
    expect(() => nodeHeaderKey(root)).toThrow(/header\.key is a symlink, not a regular file: it is not opened/);
  });

  it('refuses a key readable by others, naming what to do', () => {
    const root = path.join(dir, 'c');
    fs.mkdirSync(path.join(root, '.vmsnap'), { recursive: true, mode: 0o700 });
    fs.chmodSync(path.join(root, '.vmsnap'), 0o700);
    fs.writeFileSync(headerKeyPath(root), Buffer.alloc(HEADER_KEY_BYTES));
    fs.chmodSync(headerKeyPath(root), 0o644);
    expect(() => nodeHeaderKey(root)).toThrow(/mode 644\): if it was tampered with, remove it/);
  });
});
