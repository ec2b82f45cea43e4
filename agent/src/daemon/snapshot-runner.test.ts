import { podSaveRefusal } from './snapshot-runner.js';

describe('podSaveRefusal', () => {
  it('saves a VM pod without writable disks', () => {
    expect(podSaveRefusal('VM a/web (pod web-0)', [])).toBeUndefined();
  });

  it('refuses writable disks, naming them (bounded: the names come from the tenant) and what to do', () => {
    const message = podSaveRefusal('VM a/web (pod web-0)', ['virtio0', 'x'.repeat(500), ...Array.from({ length: 20 }, (_, i) => `d${i}`)])!;
    expect(message).toMatch(/^VM a\/web \(pod web-0\) has writable disks \(virtio0, x{64}, d0, .*d5\): saving VM pods with writable disks is not supported yet .*attach the disks read-only/);
    expect(message).not.toMatch(/d6/);
  });
});
