import os from 'node:os';
import { planPreallocArgv } from './prealloc.js';
import { planLazyArgv } from '../agent/src/engine/lazy/plan.js';

const tail = ['-S', '-incoming', 'defer'];
const main = { id: 'pc.ram', usedLength: 268435456, pages: 65536, pagesPresent: 60000 };
const threads = Math.min(4, os.availableParallelism());

describe('planPreallocArgv', () => {
  it('adds a preallocated memory-backend-ram in place of the default RAM', () => {
    expect(planPreallocArgv(['qemu', '-m', '256', ...tail], main, 4)).toEqual({
      prealloc: true,
      threads,
      argv: ['qemu', '-m', '256', ...tail, '-object', `memory-backend-ram,id=pc.ram,size=268435456,prealloc=on,prealloc-threads=${threads}`, '-machine', 'memory-backend=pc.ram'],
    });
  });

  it('turns prealloc on in the VM’s own memory-backend-ram, keeping its other properties', () => {
    const plan = planPreallocArgv(['qemu', '-object', 'memory-backend-ram,id=m,size=256M,merge=off', '-machine', 'pc,memory-backend=m', ...tail], { ...main, id: 'm' }, 1);
    expect(plan).toMatchObject({ prealloc: true, threads: 1 });
    expect((plan as { argv: string[] }).argv[2]).toBe('memory-backend-ram,id=m,size=256M,merge=off,prealloc=on,prealloc-threads=1');
  });

  it('writes the JSON form back as JSON', () => {
    const plan = planPreallocArgv(['qemu', '-object', '{"qom-type":"memory-backend-ram","id":"pc.ram","size":268435456}', ...tail], main, 2);
    expect(JSON.parse((plan as { argv: string[] }).argv[2]!)).toEqual({ 'qom-type': 'memory-backend-ram', id: 'pc.ram', size: 268435456, prealloc: true, 'prealloc-threads': Math.min(2, os.availableParallelism()) });
  });

  it.each([
    [{ pagesPresent: 1000 }, [], /holds 2% of the RAM's pages/],
    [{}, ['-mem-path', '/dev/hugepages'], /-mem-path/],
    [{}, ['-object', 'memory-backend-file,id=pc.ram,size=256M,mem-path=/dev/shm/x,share=on'], /memory-backend-file/],
    [{}, ['-object', 'memory-backend-ram,id=pc.ram,size=256M,share=on'], /share=on/],
    [{}, ['-object', 'memory-backend-memfd,id=pc.ram,size=256M'], /memory-backend-memfd/],
    [{}, ['-machine', 'pc,memory-backend=other'], /memory-backend=other has no -object/],
    [{}, ['-numa', 'node,memdev=m0', '-object', 'memory-backend-ram,id=m0,size=128M'], /NUMA/],
  ])('leaves the RAM as it is for %j %j', (block, extra, reason) => {
    const plan = planPreallocArgv(['qemu', '-m', '256', ...extra, ...tail], { ...main, ...block }, 4);
    expect(plan).toEqual({ prealloc: false, reason: expect.stringMatching(reason) });
  });

  it('a later lazy restore of a preallocated VM maps the file without preallocating it', () => {
    const eager = planPreallocArgv(['qemu', '-m', '256', ...tail], main, 4) as { argv: string[] };
    const lazy = planLazyArgv(eager.argv, { file: '/snap/x.vms', blockId: 'pc.ram', size: main.usedLength, offset: 2097152 }) as { argv: string[] };
    const object = lazy.argv[lazy.argv.indexOf('-object') + 1]!;
    expect(object).toMatch(/^memory-backend-file,id=pc.ram,/);
    expect(object).not.toMatch(/prealloc/);
  });
});
