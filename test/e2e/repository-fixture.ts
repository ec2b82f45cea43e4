// The repository suites' common ground: a real SeaweedFS with a bucket, the process stack with two
// nodes whose agents may read the named Secrets, a namespace and a class name, and the Secrets
// themselves built from the server's credentials.
import { randomBytes } from 'node:crypto';
import { createNamespace } from '../../stack/controlplane.js';
import { startSeaweedFS, type S3Server } from '../../stack/seaweedfs.js';
import { startStack, type Stack, type StackOptions } from '../../stack/e2e.js';

export interface RepositoryStack {
  server: S3Server;
  stack: Stack;
  namespace: string;
  className: string;
  /** A Secret in the release's namespace (values given in plain, stored base64). */
  secret(name: string, data: Record<string, string | Buffer>): object;
  /** The Secret of the server's credentials, or of its access key with `secretAccessKey` in their place. */
  credentialsSecret(name: string, secretAccessKey?: string): object;
}

export async function startRepositoryStack(opts: { bucket: string; prefix: string; secrets: string[]; stack?: StackOptions }): Promise<RepositoryStack> {
  const server = await startSeaweedFS();
  await server.createBucket(opts.bucket);
  const stack = await startStack(['node-a', 'node-b'], {
    ...opts.stack,
    helmArgs: [...(opts.stack?.helmArgs ?? []), '--set', `agent.repositorySecrets={${opts.secrets.join(',')}}`],
  });
  const namespace = await createNamespace(opts.prefix);
  const className = `${opts.prefix}-${randomBytes(3).toString('hex')}`;
  const secret = (name: string, data: Record<string, string | Buffer>) => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: stack.releaseNamespace },
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
  });
  const credentialsSecret = (name: string, secretAccessKey = server.credentials.secretAccessKey) =>
    secret(name, { accessKeyId: server.credentials.accessKeyId, secretAccessKey });
  return { server, stack, namespace, className, secret, credentialsSecret };
}
