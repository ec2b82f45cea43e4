import { whyNotEarly } from './early-qemu.js';

describe('whyNotEarly (QEMU launched while the snapshot downloads)', () => {
  it('launches for an eager restore without disks into an empty target', () => {
    expect(whyNotEarly({ lazy: false, disks: 0, target: 'absent' })).toBeUndefined();
  });
  it('leaves a lazy restore, a VM with disks and an occupied target to the path after the download', () => {
    expect(whyNotEarly({ lazy: true, disks: 0, target: 'absent' })).toMatch(/lazy/);
    expect(whyNotEarly({ lazy: false, disks: 1, target: 'absent' })).toMatch(/disks/);
    expect(whyNotEarly({ lazy: false, disks: 0, target: 'answers' })).toMatch(/QEMU is at the target/);
    expect(whyNotEarly({ lazy: false, disks: 0, target: 'unreachable' })).toMatch(/QEMU is at the target/);
  });
});
