// The test kit's own tests: the poller, the manifests, the QEMU launcher and readers on a real
// QEMU, and the guest memory check on a real guest and on logs that say otherwise.
import { loadAllYaml } from '@kubernetes/client-node';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../agent/src/package-root.js';
import { VMRestoreSchema, VMSnapshotClassSchema, VMSnapshotScheduleSchema, VMSnapshotSchema } from '../api/index.js';
import { badLines, expectVerifying, guestChecks, startGuest } from './guest.js';
import { vmRestore, vmSnapshot, vmSnapshotClass, vmSnapshotSchedule, yamlDocs } from './manifests.js';
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
      vmSnapshotSchedule('nightly', { schedule: '0 3 * * *', vmNames: ['demo'], retention: { keepLast: 2 } }),
    ];
    expect(VMSnapshotSchema.safeParse(docs[0]).success).toBe(true);
    expect(VMRestoreSchema.safeParse(docs[1]).success).toBe(true);
    expect(VMSnapshotClassSchema.safeParse(docs[2]).success).toBe(true);
    expect(VMSnapshotScheduleSchema.safeParse(docs[3]).success).toBe(true);
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

  it('counts a failing /init and a kernel panic as broken, like a memory mismatch, and reads the sweeps', () => {
    const text = 'VMSNAP READY fill_mib=8 seed=1\r\nVMSNAP PASS n=1 ok\r\nVMSNAP PASS n=2 ok\r\nVMSNAP DISK ERROR bad command \'x\'\r\n';
    expect(guestChecks(text)).toEqual({ lastPass: 2, passCount: 2, bad: [] });
    const broken = `${text}VMSNAP ERROR mmap fill_mib=8: Cannot allocate memory\r\n[    1.0] Kernel panic - not syncing: Attempted to kill init!\r\nVMSNAP BAD word=3 expected=0x1 got=0x2\r\n`;
    expect(badLines(broken)).toEqual([
      'VMSNAP ERROR mmap fill_mib=8: Cannot allocate memory',
      '[    1.0] Kernel panic - not syncing: Attempted to kill init!',
      'VMSNAP BAD word=3 expected=0x1 got=0x2',
    ]);
    expect(guestChecks(broken).bad).toEqual(badLines(broken));
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

describe('what the bench and the demo run in', () => {
  it('is the environments of stack/, never a file of test/', () => {
    const root = packageRoot();
    const imported = new Set<string>();
    for (const d of ['bench', 'demo', 'kit', 'stack']) {
      for (const f of fs.readdirSync(path.join(root, d)).filter((n) => n.endsWith('.ts') && !n.endsWith('.test.ts'))) {
        // Static imports and the demo's dynamic ones alike.
        for (const m of fs.readFileSync(path.join(root, d, f), 'utf8').matchAll(/(?:from |import\()'(\.\.\/(?:test|stack)\/[^']+)'/g)) imported.add(`${d}: ${m[1]!}`);
      }
    }
    expect([...imported].filter((m) => m.includes('../test/'))).toEqual([]);
    const environments = new Set([...imported].filter((m) => /^(bench|demo): /.test(m)).map((m) => m.replace(/^\w+: /, '')));
    expect([...environments].sort()).toEqual([
      '../stack/controlplane.js',
      '../stack/e2e.js',
      '../stack/node-cluster.js',
      '../stack/product.js',
      '../stack/run.js',
      '../stack/seaweedfs.js',
      '../stack/vm-pod.js',
    ]);
  });
});
