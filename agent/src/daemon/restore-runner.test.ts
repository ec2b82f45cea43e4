import { copyRewrite } from './restore-runner.js';

describe('copyRewrite', () => {
  const recordedArgv = [
    'qemu-system-x86_64', '-name', 'demo',
    '-chardev', 'file,id=serial0,path=/vms/ns/demo/serial.log,append=on',
    '-qmp', 'unix:/vms/ns/demo/qmp.sock,server=on,wait=off',
  ];
  const base = { recordedArgv, recordedSocket: '/vms/ns/demo/qmp.sock', targetSocket: '/vms/ns/copy/qmp.sock', targetDir: '/vms/ns/copy', targetName: 'copy' };

  it("moves the copy into its own directory and renames it", () => {
    const rewrite = copyRewrite({ ...base, sourceDirs: ['/vms/ns/demo', '/vms/ns/demo'] });
    expect(rewrite).toEqual({ paths: [['/vms/ns/demo', '/vms/ns/copy']], name: 'copy' });
  });

  it('refuses a copy that would share the source VM\'s RAM file', () => {
    const argv = [...recordedArgv, '-object', 'memory-backend-file,id=pc.ram,size=256M,mem-path=/dev/shm/demo-ram,share=on'];
    expect(() => copyRewrite({ ...base, recordedArgv: argv, sourceDirs: ['/vms/ns/demo'] })).toThrow(/keeps its RAM in \/dev\/shm\/demo-ram/);
    const inside = [...recordedArgv, '-object', 'memory-backend-file,id=pc.ram,size=256M,mem-path=/vms/ns/demo/ram,share=on'];
    expect(() => copyRewrite({ ...base, recordedArgv: inside, sourceDirs: ['/vms/ns/demo'] })).not.toThrow();
  });
});
