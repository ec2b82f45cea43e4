import { podDir, socketNodePath, socketRelPath } from './run-volume.js';

const UID = '0f2c7b1e-5a3d-4e8f-9b6a-1c2d3e4f5a6b';

describe('run volume paths', () => {
  it("places a VM pod's sockets in the kubelet's emptyDir of the pod", () => {
    expect(podDir('/var/lib/kubelet/', UID)).toBe(`/var/lib/kubelet/pods/${UID}`);
    expect(socketRelPath('qmp.sock')).toBe('volumes/kubernetes.io~empty-dir/vmsnap-run/qmp.sock');
    expect(socketNodePath('/var/lib/kubelet', UID, 'launcher.sock')).toBe(`/var/lib/kubelet/pods/${UID}/volumes/kubernetes.io~empty-dir/vmsnap-run/launcher.sock`);
  });

  it('refuses a uid or socket name that could walk elsewhere', () => {
    expect(() => podDir('/var/lib/kubelet', '../../etc')).toThrow(/not a pod uid/);
    expect(() => podDir('kubelet', UID)).toThrow(/absolute/);
    for (const bad of ['../qmp.sock', 'a/b', '.hidden', '', 'x'.repeat(65)]) expect(() => socketRelPath(bad)).toThrow(/plain socket file name/);
  });
});
