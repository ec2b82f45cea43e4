import { inventoryVmIsUp } from '../../../api/index.js';
import { queryInventoryVm } from './inventory.js';

describe('queryInventoryVm without a QMP that answers', () => {
  const vm = { namespace: 'a', name: 'web', qmpSocket: '/k/pods/u/volumes/kubernetes.io~empty-dir/vmsnap-run/qmp.sock' };

  it('shows a VM pod whose launcher runs no QEMU (hibernated) as stopped, not running', async () => {
    const entry = await queryInventoryVm(vm, async () => ({ kind: 'absent', stopped: true, message: 'no QEMU runs in VM pod vm-web-0' }));
    expect(entry).toEqual({ ...vm, state: 'stopped', message: 'no QEMU runs in VM pod vm-web-0' });
    expect(inventoryVmIsUp(entry.state)).toBe(false);
  });

  it('shows a missing or refused socket as unreachable, with the reason', async () => {
    expect(await queryInventoryVm(vm, async () => ({ kind: 'absent', message: 'no QMP socket' }))).toMatchObject({ state: 'unreachable', message: 'no QMP socket' });
    expect(await queryInventoryVm(vm, async () => ({ kind: 'unreachable', message: 'a symlink is in its path' }))).toMatchObject({ state: 'unreachable' });
    expect(inventoryVmIsUp('unreachable')).toBe(false);
    expect(inventoryVmIsUp('paused')).toBe(true);
  });
});
