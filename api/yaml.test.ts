import { loadAllYaml } from '@kubernetes/client-node';
import { allCrds } from './crd.js';
import { toYaml } from './yaml.js';

const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

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

  it('keeps every member of a CRD (enum, x-kubernetes-*), which client-node models with its own field names', () => {
    // Read back as a kind client-node does not model, so its reader returns the document as written.
    for (const crd of allCrds()) {
      const text = toYaml(crd).replace(/^kind: CustomResourceDefinition$/m, 'kind: Unmodelled');
      expect(plain(loadAllYaml(text)[0])).toEqual(plain({ ...crd, kind: 'Unmodelled' }));
    }
  });

  it('writes block style, long strings on one line, and omits undefined members', () => {
    expect(toYaml({ a: { b: [1, { c: 'd' }] } })).toBe('a:\n  b:\n    - 1\n    - c: d\n');
    expect(toYaml({ a: 1, b: undefined })).toBe('a: 1\n');
    const long = 'word '.repeat(40).trim();
    expect(toYaml({ long })).toBe(`long: ${long}\n`);
  });

  it('writes apiVersion and kind first', () => {
    expect(toYaml({ metadata: { name: 'x' }, kind: 'VMSnapshot', apiVersion: 'vmsnap.io/v1alpha1' })).toBe(
      'apiVersion: vmsnap.io/v1alpha1\nkind: VMSnapshot\nmetadata:\n  name: x\n',
    );
  });
});
