import { withParentDeathSignal } from './qemu-process.js';

describe('withParentDeathSignal', () => {
  it('runs QEMU through setpriv, which execs it (the pid stays QEMU\'s)', () => {
    expect(withParentDeathSignal(['qemu-system-x86_64', '-m', '64'], '/usr/bin/setpriv')).toEqual([
      '/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', 'qemu-system-x86_64', '-m', '64',
    ]);
  });

  it('runs QEMU directly without setpriv', () => {
    expect(withParentDeathSignal(['qemu-system-x86_64'], null)).toEqual(['qemu-system-x86_64']);
  });
});
