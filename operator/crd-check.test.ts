import { CRD_REVISION, CRD_REVISION_ANNOTATION, allCrds } from '../api/index.js';
import { REQUIRED_CRDS, crdProblem, type InstalledCrd } from './crd-check.js';

const installed = (revision: string | undefined, omit?: string) =>
  new Map<string, InstalledCrd | undefined>(
    REQUIRED_CRDS.filter((n) => n !== omit).map((name): [string, InstalledCrd] => [name, { name, annotations: revision === undefined ? {} : { [CRD_REVISION_ANNOTATION]: revision } }]),
  );

describe('crdProblem', () => {
  it('accepts the generated CRDs, and newer ones', () => {
    const generated = new Map(allCrds().map((d) => [d.metadata.name, { name: d.metadata.name, annotations: d.metadata.annotations }]));
    expect(crdProblem(generated)).toBeUndefined();
    expect(crdProblem(installed(String(CRD_REVISION + 1)))).toBeUndefined();
  });

  it('refuses older CRDs, naming each, the revisions and the upgrade step', () => {
    const message = crdProblem(installed('1'), 2)!;
    expect(message).toMatch(/CRD vmsnapshots\.vmsnap\.io is revision 1, older than this operator's 2/);
    expect(message).toMatch(/kubectl apply --server-side -f <chart>\/crds\//);
    expect(crdProblem(installed(undefined), 2)).toMatch(/vmrestores\.vmsnap\.io is revision 1/); // no annotation: the first CRDs
    expect(crdProblem(installed('two'), 2)).toMatch(/"two", not a whole number/);
  });

  it('refuses a missing CRD', () => {
    expect(crdProblem(installed(String(CRD_REVISION), 'vminventories.vmsnap.io'))).toMatch(/^CRD vminventories\.vmsnap\.io is not installed/);
  });
});
