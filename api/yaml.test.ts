import { loadAllYaml } from '@kubernetes/client-node';
import { toYaml } from './yaml.js';

describe('toYaml', () => {
  it('round-trips tricky scalars through a real YAML reader', () => {
    const value = {
      plain: 'vmsnap.io/is-default-class',
      words: ['yes', 'no', 'on', 'off', 'y', 'N', 'true', 'False', 'null', '~', ''],
      numbers: ['10m', '1.0', '0x1F', '1e3', '.inf', '012', 10, 1.5, 0, -3],
      punctuation: ['a: b', '#x', ' lead', 'trail ', '-x', '?x', '*x', '&x', '!x', '%x', '@x', '`x', '{x}', '[x]', "it's", 'say "hi"'],
      multiline: 'a\nb\tc',
      unicode: 'µs ≥ 1',
      flags: [true, false, null],
      empty: { obj: {}, arr: [] },
      nested: [[1, [2, 3]], { a: [{ b: 1, c: [] }] }],
      'key with space': 1,
      yes: 'key named yes',
    };
    expect(loadAllYaml(toYaml(value))).toEqual([value]);
  });

  it('writes block style with plain keys', () => {
    expect(toYaml({ a: { b: [1, { c: 'd' }] } })).toBe('a:\n  b:\n    - 1\n    - c: d\n');
  });

  it('omits undefined members', () => {
    expect(toYaml({ a: 1, b: undefined })).toBe('a: 1\n');
  });
});
