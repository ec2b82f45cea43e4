import { VmLocks, vmKey } from './vm-locks.js';

describe('VmLocks', () => {
  it('gives a VM to one holder at a time', async () => {
    const locks = new VmLocks();
    const key = vmKey('ns', 'vm');
    const release = locks.tryAcquire(key, 'inventory')!;
    expect(locks.tryAcquire(key, 'job')).toBeUndefined();
    expect(locks.owner(key)).toBe('inventory');
    const waiting = locks.acquire(key, 'job', 5000);
    setTimeout(release, 20);
    const second = await waiting;
    expect(second).toBeDefined();
    expect(locks.owner(key)).toBe('job');
    expect(await locks.acquire(key, 'other', 30)).toBeUndefined();
    second!();
    second!(); // releasing twice is harmless
    expect(locks.isHeld(key)).toBe(false);
    expect(locks.tryAcquire(vmKey('ns', 'other'), 'x')).toBeDefined();
  });
});
