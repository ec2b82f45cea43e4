// Paths from a tenant's command line or QMP replies (mem-path, disk images)
// are opened only as regular files, never through a symlink, and never with a
// blocking open: a FIFO would stall the agent's event loop for good.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { agentLaunchLogPath, openRegular } from './private-files.js';
import { isSnapshotOrGone, recordableArgv } from './lazy/recorded-argv.js';
import { qcow2Backing } from './disk-merge.js';

let dir: string;
let fifo: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-open-'));
  fifo = path.join(dir, 'ram');
  execFileSync('mkfifo', [fifo]);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('opening tenant-named files', () => {
  it('attack: a FIFO as mem-path in a recorded command line does not block the save', () => {
    expect(isSnapshotOrGone(fifo)).toBe(false);
    const argv = ['qemu', '-object', `memory-backend-file,id=pc.ram,size=64M,mem-path=${fifo},share=on`];
    expect(recordableArgv(argv)).toEqual(argv); // left as it is, and returned at once
  });

  it('attack: a FIFO, a device or a symlink among disk layers is never opened', () => {
    fs.symlinkSync('/dev/zero', path.join(dir, 'link.qcow2'));
    for (const f of [fifo, '/dev/zero', path.join(dir, 'link.qcow2')]) expect(qcow2Backing(f)).toBeUndefined();
  });

  it('openRegular refuses what is not a plain file, and reports a missing one', () => {
    expect(() => openRegular(fifo, fs.constants.O_RDONLY)).toThrow(`${fifo} is a FIFO, not a regular file: it is not opened`);
    expect(() => openRegular('/dev/null', fs.constants.O_RDONLY)).toThrow(/is a device/);
    fs.writeFileSync(path.join(dir, 'f'), 'x');
    fs.symlinkSync(path.join(dir, 'f'), path.join(dir, 'l'));
    expect(() => openRegular(path.join(dir, 'l'), fs.constants.O_RDONLY)).toThrow(/is a symlink/);
    expect(openRegular(path.join(dir, 'absent'), fs.constants.O_RDONLY)).toBeUndefined();
    const fd = openRegular(path.join(dir, 'f'), fs.constants.O_RDONLY)!;
    expect(fs.readFileSync(fd, 'utf8')).toBe('x');
    fs.closeSync(fd);
  });
});

describe("the agent's launch logs", () => {
  it('live in its own 0700 directory under the storage root, named by namespace and VM', () => {
    const log = agentLaunchLogPath(dir, 'ns', 'vm.1');
    expect(log).toBe(path.join(dir, '.vmsnap', 'logs', 'ns_vm.1.qemu.log'));
    expect(fs.statSync(path.dirname(log)).mode & 0o777).toBe(0o700);
  });

  it('refuses names that could leave that directory', () => {
    for (const [ns, vm] of [['ns', '../x'], ['..', 'vm'], ['ns', 'a/b'], ['ns', 'a..b']]) {
      expect(() => agentLaunchLogPath(dir, ns!, vm!)).toThrow(/is not a Kubernetes namespace and name/);
    }
  });
});
