import { ConfigError, launcherConfig } from './config.js';

describe('launcherConfig', () => {
  it('defaults to the pod mount and starting QEMU', () => {
    const c = launcherConfig({});
    expect(c.paths).toEqual({ runDir: '/run/vmsnap', qmpSocket: '/run/vmsnap/qmp.sock', launcherSocket: '/run/vmsnap/launcher.sock' });
    expect(c.start).toBe('run');
    expect(c.stopGraceMs).toBe(10_000);
  });

  it('reads the run directory, start mode and timings from the environment', () => {
    const c = launcherConfig({ VMSNAP_RUN_DIR: '/tmp/x/', VMSNAP_LAUNCHER_START: 'wait', VMSNAP_QEMU_STOP_GRACE_MS: '500', VMSNAP_QMP_READY_TIMEOUT_MS: '2000' });
    expect(c.paths.qmpSocket).toBe('/tmp/x/qmp.sock');
    expect(c.start).toBe('wait');
    expect(c.stopGraceMs).toBe(500);
    expect(c.qmpReadyTimeoutMs).toBe(2000);
    expect(launcherConfig({ VMSNAP_LAUNCHER_START: 'incoming' }).start).toBe('incoming');
  });

  it('names the variable it cannot use', () => {
    expect(() => launcherConfig({ VMSNAP_LAUNCHER_START: 'later' })).toThrow(/VMSNAP_LAUNCHER_START=later: expected one of run, wait, incoming/);
    expect(() => launcherConfig({ VMSNAP_QEMU_STOP_GRACE_MS: '-1' })).toThrow(ConfigError);
    // A socket path the kernel cannot bind is refused up front, not truncated or failed at bind.
    const long = `/var/lib/kubelet/pods/${'0'.repeat(36)}/volumes/kubernetes.io~empty-dir/vmsnap-run`;
    expect(() => launcherConfig({ VMSNAP_RUN_DIR: long })).toThrow(/qmp\.sock would be 110 bytes long, over the 107 a unix socket path may have/);
  });
});
