import { cgroupBelongsToPod, podUidsInCgroup } from './cgroup.js';

const A = '0f2c7b1e-5a3d-4e8f-9b6a-1c2d3e4f5a6b';
const B = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
const us = (uid: string) => uid.replace(/-/g, '_');

describe('pod uid from /proc/<pid>/cgroup', () => {
  it('reads the cgroupfs driver layout (cgroup v1, one line per hierarchy)', () => {
    const text = `12:pids:/kubepods/burstable/pod${A}/0123abcd\n11:memory:/kubepods/burstable/pod${A}/0123abcd\n1:name=systemd:/kubepods/burstable/pod${A}/0123abcd\n0::/\n`;
    expect([...podUidsInCgroup(text)]).toEqual([A]);
    expect(cgroupBelongsToPod(text, A)).toEqual({ ok: true });
  });

  it('reads the systemd driver layout (cgroup v2, underscores in the uid)', () => {
    const text = `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us(A)}.slice/cri-containerd-0123.scope\n`;
    expect(cgroupBelongsToPod(text, A)).toEqual({ ok: true });
    const guaranteed = `0::/kubepods.slice/kubepods-pod${us(A)}.slice/cri-containerd-0123.scope\n`;
    expect(cgroupBelongsToPod(guaranteed, A)).toEqual({ ok: true });
  });

  it('refuses a process of another pod, of two pods, or of no pod', () => {
    expect(cgroupBelongsToPod(`0::/kubepods/besteffort/pod${B}/c\n`, A)).toMatchObject({ ok: false, reason: expect.stringMatching(`pod ${B}, not of pod ${A}`) });
    expect(cgroupBelongsToPod(`5:pids:/kubepods/pod${A}/c\n4:memory:/kubepods/pod${B}/c\n`, A)).toMatchObject({ ok: false });
    expect(cgroupBelongsToPod('0::/system.slice/containerd.service\n', A)).toMatchObject({ ok: false, reason: expect.stringMatching(/no pod cgroup/) });
    expect(cgroupBelongsToPod('', A)).toMatchObject({ ok: false });
  });

  it('needs the uid as a whole path component, not inside another name', () => {
    expect(podUidsInCgroup(`0::/user.slice/mypod${A}/x\n`).size).toBe(0);
    expect(podUidsInCgroup(`0::/kubepods/pod${A}x/c\n`).size).toBe(0);
    expect(podUidsInCgroup(`0::/kubepods/pod${A.toUpperCase()}/c\n`).size).toBe(0);
  });
});
