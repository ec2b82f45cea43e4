// A repository's credentials and encryption key, read from the Secrets it names in the agent's own
// namespace (the chart grants `get` on exactly those names there, nothing else).
import { CREDENTIALS_KEYS, ENCRYPTION_KEY_KEY, type Repository } from '../../../api/index.js';
import type { Kube } from '../../../kube/client.js';
import { statusCode } from '../../../kube/client.js';
import { repositoryClient, type RepositoryCredentials } from './client.js';
import { ENCRYPTION_KEY_BYTES } from './codec.js';
import type { TransferTarget } from './upload.js';
import { DEFAULT_UPLOAD_PARALLELISM } from '../../../api/index.js';

async function secretData(kube: Kube, namespace: string, name: string, field: string): Promise<Record<string, Buffer>> {
  try {
    const secret = await kube.core.readNamespacedSecret({ name, namespace });
    return Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
  } catch (err) {
    const code = statusCode(err);
    if (code === 404) throw new Error(`${field}: Secret ${namespace}/${name} does not exist`);
    if (code === 403) throw new Error(`${field}: the agent may not read Secret ${namespace}/${name}: list it in the chart's agent.repositorySecrets`);
    throw new Error(`${field}: cannot read Secret ${namespace}/${name}: ${String(err)}`);
  }
}

/** Checks a Secret's credentials and key, pure so the rules are tested without a cluster. */
export function parseRepositorySecrets(
  repo: Pick<Repository, 'credentialsSecret' | 'encryptionKeySecret'>,
  creds: Record<string, Buffer>,
  keyData: Record<string, Buffer> | undefined,
): { credentials: RepositoryCredentials; key?: Buffer } {
  const get = (k: string) => {
    const v = creds[k]?.toString('utf8');
    if (!v) throw new Error(`repository.credentialsSecret: Secret ${repo.credentialsSecret} has no ${k}`);
    return v;
  };
  const credentials = { accessKeyId: get(CREDENTIALS_KEYS.accessKeyId), secretAccessKey: get(CREDENTIALS_KEYS.secretAccessKey) };
  if (!repo.encryptionKeySecret) return { credentials };
  const key = keyData?.[ENCRYPTION_KEY_KEY];
  if (!key || key.length !== ENCRYPTION_KEY_BYTES) {
    throw new Error(
      `repository.encryptionKeySecret: Secret ${repo.encryptionKeySecret} must hold exactly ${ENCRYPTION_KEY_BYTES} bytes under "${ENCRYPTION_KEY_KEY}" (it holds ${key?.length ?? 0})`,
    );
  }
  return { credentials, key };
}

/** What an upload or download of one snapshot needs: the client, bucket, prefix, codec settings. */
export async function repositoryTarget(kube: Kube, namespace: string, repo: Repository, prefix: string): Promise<TransferTarget> {
  const creds = await secretData(kube, namespace, repo.credentialsSecret, 'repository.credentialsSecret');
  const keyData = repo.encryptionKeySecret ? await secretData(kube, namespace, repo.encryptionKeySecret, 'repository.encryptionKeySecret') : undefined;
  const { credentials, key } = parseRepositorySecrets(repo, creds, keyData);
  return {
    client: repositoryClient(repo, credentials),
    bucket: repo.bucket,
    prefix,
    compression: repo.compression ?? 'None',
    ...(key ? { key } : {}),
    parallelism: repo.parallelism ?? DEFAULT_UPLOAD_PARALLELISM,
  };
}
