// `helm test`: run in a pod under the operator's ServiceAccount, it checks that the installed
// CRDs are not older than this release and that the operator answers ready. Env:
// VMSNAP_READYZ_URL (the operator's /readyz, through its metrics Service). Exit 0 when both hold.
import { Kube } from '../kube/client.js';
import { crdProblem } from './crd-check.js';
import { installedCrds } from './installed-crds.js';

async function main(): Promise<number> {
  const problems: string[] = [];
  const crds = crdProblem(await installedCrds(new Kube()));
  if (crds) problems.push(crds);
  else console.log('CRDs: installed, revision current');
  const url = process.env.VMSNAP_READYZ_URL;
  if (!url) problems.push('VMSNAP_READYZ_URL is not set');
  else {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(10_000) });
      const body = (await r.text()).trim();
      if (r.status === 200) console.log(`operator: ready (${url})`);
      else problems.push(`operator not ready at ${url}: HTTP ${r.status} ${body}`);
    } catch (err) {
      problems.push(`operator does not answer at ${url}: ${String((err as Error).cause ?? err)}`);
    }
  }
  for (const p of problems) console.error(`FAIL ${p}`);
  return problems.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`FAIL ${String(err)}`);
    process.exit(1);
  },
);
