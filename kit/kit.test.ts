// The test kit's own tests: the poller, the manifests, the QEMU launcher and readers on a real
// QEMU, and the guest memory check on a real guest and on logs that say otherwise.
import { loadAllYaml } from '@kubernetes/client-node';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { VMRestoreSchema, VMSnapshotClassSchema, VMSnapshotSchema } from '../api/index.js';
import { expectVerifying, startGuest } from './guest.js';
import { vmRestore, vmSnapshot, vmSnapshotClass, yamlDocs } from './manifests.js';
import { poll, sleep } from './poll.js';
import { launchQemu, procArgv, qemuPidsMentioning, qemuRunState, startTinyVm } from './qemu.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-kit-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('poll', () => {
  it('returns the first value the probe gives', async () => {
    let n = 0;
    await expect(poll('n to reach 3', () => ++n >= 3 && n, { intervalMs: 1 })).resolves.toBe(3);
  });

  it('times out naming what it waited for and the last state', async () => {
    await expect(poll('a miracle', () => false, { timeoutMs: 50, intervalMs: 5, describe: () => 'still none' })).rejects.toThrow(
      'timed out after 50 ms waiting for a miracle (last: still none)',
    );
  });

  it('stops at once when the probe throws', async () => {
    let calls = 0;
    const start = poll('never', () => {
      calls++;
      throw new Error('cannot happen any more');
    }, { timeoutMs: 10_000 });
    await expect(start).rejects.toThrow('cannot happen any more');
    expect(calls).toBe(1);
  });
});

describe('manifests', () => {
  it('builds objects the api schemas accept, and writes them as one YAML stream', () => {
    const docs = [
      vmSnapshot({ name: 's', namespace: 'ns' }, { vmName: 'demo', afterSnapshot: 'Stop' }),
      vmRestore('r', { snapshotName: 's', ifRunning: 'Replace' }),
      vmSnapshotClass('c', { digests: 'Record' }),
    ];
    expect(VMSnapshotSchema.safeParse(docs[0]).success).toBe(true);
    expect(VMRestoreSchema.safeParse(docs[1]).success).toBe(true);
    expect(VMSnapshotClassSchema.safeParse(docs[2]).success).toBe(true);
    expect(loadAllYaml(yamlDocs(...docs))).toEqual(docs);
  });
});

describe('QEMU', () => {
  it('launches a QEMU, reads its run state and command line, finds it by its directory and ends it', async () => {
    const vmDir = path.join(dir, 'tiny');
    const vm = await startTinyVm(vmDir);
    try {
      expect((await qemuRunState(vm.qmpPath)).status).toBe('running');
      expect(procArgv(vm.pid)).toEqual(vm.argv);
      expect(qemuPidsMentioning(vmDir)).toEqual([vm.pid]);
    } finally {
      await vm.kill('SIGKILL');
    }
    expect(procArgv(vm.pid)).toBeUndefined();
    expect(qemuPidsMentioning(vmDir)).toEqual([]);
  });

  it('fails with QEMU own words when it exits before its QMP socket exists', async () => {
    const qmpPath = path.join(dir, 'bad.sock');
    await expect(
      launchQemu({ argv: ['qemu-system-x86_64', '-no-such-option', '-qmp', `unix:${qmpPath},server=on,wait=off`], qmpPath, logPath: path.join(dir, 'bad.log') }),
    ).rejects.toThrow(/exited \(code 1\) before creating .*\n.*argv: .*-no-such-option[\s\S]*log:\n.*invalid option/);
  });
});

describe('guest memory check', () => {
  const log = (name: string, text: string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, text);
    return f;
  };

  it('passes on two new passing sweeps after `after`, from `from`', async () => {
    const f = log('ok.log', 'VMSNAP PASS n=1 ok\r\nVMSNAP PASS n=2 ok\r\n');
    const later = expectVerifying(f, { after: 2, timeoutMs: 10_000 });
    await sleep(300);
    fs.appendFileSync(f, 'VMSNAP PASS n=3 ok\r\nVMSNAP PASS n=4 ok\r\n');
    await expect(later).resolves.toBe(4);
  });

  it('fails naming the BAD line, and times out when the guest stops verifying', async () => {
    const bad = log('bad.log', 'VMSNAP PASS n=1 ok\r\nVMSNAP BAD word=7 expected=0x1 got=0x2\r\nVMSNAP PASS n=2 ok\r\nVMSNAP PASS n=3 ok\r\n');
    await expect(expectVerifying(bad)).rejects.toThrow('guest memory damaged: VMSNAP BAD word=7 expected=0x1 got=0x2');
    const stale = log('stale.log', 'VMSNAP PASS n=1 ok\r\nVMSNAP PASS n=2 ok\r\n');
    await expect(expectVerifying(stale, { after: 2, timeoutMs: 300 })).rejects.toThrow(/timed out after 300 ms waiting for two passing memory checks after n=2/);
  });

  it('sees a real guest fill and verify its memory', async () => {
    const guest = await startGuest({ dir: path.join(dir, 'guest'), memMiB: 128, fillMiB: 8 });
    try {
      await guest.waitForSerial(/VMSNAP READY/, 120_000);
      expect(await expectVerifying(guest.serialPath, { timeoutMs: 120_000 })).toBeGreaterThanOrEqual(2);
      expect(guest.badLines()).toEqual([]);
    } finally {
      await guest.kill();
    }
  });
});

describe('what the bench and the demo take from test/', () => {
  it('is no suite, only the environments they run in (a control plane, the process stack, the node cluster)', () => {
    const root = packageRoot();
    const imported = new Set<string>();
    for (const d of ['bench', 'demo']) {
      for (const f of fs.readdirSync(path.join(root, d)).filter((n) => n.endsWith('.ts'))) {
        for (const m of fs.readFileSync(path.join(root, d, f), 'utf8').matchAll(/from '(\.\.\/test\/[^']+)'/g)) imported.add(m[1]!);
      }
    }
    expect([...imported].filter((m) => m.endsWith('.test.js'))).toEqual([]);
    expect([...imported].sort()).toEqual(['../test/cluster/controlplane.js', '../test/e2e/stack.js', '../test/node/cluster.js', '../test/node/product.js', '../test/node/vm-pod.js']);
  });
});
