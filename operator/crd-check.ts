// The start-up check that the installed CRDs are not older than this operator: Helm installs a
// chart's crds/ only on first install, so an upgraded operator can meet the CRDs of an older
// release, whose schemas would silently prune the fields it writes.
import { CRD_REVISION, CRD_REVISION_ANNOTATION, GROUP, RESOURCES } from '../api/index.js';

export const REQUIRED_CRDS = Object.values(RESOURCES).map((r) => `${r.plural}.${GROUP}`);

export interface InstalledCrd {
  name: string;
  annotations?: Record<string, string>;
}

const UPGRADE_HINT = "apply the chart's CRDs first: kubectl apply --server-side -f <chart>/crds/ (see the chart README, Upgrading)";

/** undefined when every CRD is present and at least CRD_REVISION, else what is wrong and what to do. */
export function crdProblem(installed: ReadonlyMap<string, InstalledCrd | undefined>, required = CRD_REVISION): string | undefined {
  const problems: string[] = [];
  for (const name of REQUIRED_CRDS) {
    const crd = installed.get(name);
    if (!crd) {
      problems.push(`CRD ${name} is not installed`);
      continue;
    }
    const raw = crd.annotations?.[CRD_REVISION_ANNOTATION];
    const revision = raw === undefined ? 1 : Number(raw);
    if (!Number.isInteger(revision)) problems.push(`CRD ${name} has ${CRD_REVISION_ANNOTATION}="${raw}", not a whole number`);
    else if (revision < required) problems.push(`CRD ${name} is revision ${revision}, older than this operator's ${required}`);
  }
  return problems.length ? `${problems.join('; ')}: ${UPGRADE_HINT}` : undefined;
}
