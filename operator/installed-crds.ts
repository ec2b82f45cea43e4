// Reads the vmsnap CRDs from the API server, for crdProblem (operator start-up and `helm test`).
import * as k8s from '@kubernetes/client-node';
import { statusCode, type Kube } from '../kube/client.js';
import { REQUIRED_CRDS, type InstalledCrd } from './crd-check.js';

/** Each required CRD by name; undefined when it is not installed. */
export async function installedCrds(kube: Kube): Promise<Map<string, InstalledCrd | undefined>> {
  const api = kube.kc.makeApiClient(k8s.ApiextensionsV1Api);
  const entries = await Promise.all(
    REQUIRED_CRDS.map(async (name) => {
      try {
        const crd = await api.readCustomResourceDefinition({ name });
        return [name, { name, annotations: crd.metadata?.annotations }] as const;
      } catch (err) {
        if (statusCode(err) === 404) return [name, undefined] as const;
        throw err;
      }
    }),
  );
  return new Map(entries);
}
