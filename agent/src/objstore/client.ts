// The S3 client for a repository, set so it never looks beyond what the repository names: an
// explicit endpoint, path-style buckets, a fixed region and static credentials (no environment,
// profile, IMDS or container-metadata lookups), checksums only where S3 requires them.
import { S3Client, type UploadPartCommand } from '@aws-sdk/client-s3';
import { DEFAULT_REGION, type Repository } from '../../../api/index.js';

export interface RepositoryCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export function repositoryClient(repo: Pick<Repository, 'endpoint' | 'region'>, creds: RepositoryCredentials, opts: { maxAttempts?: number } = {}): S3Client {
  return new S3Client({
    endpoint: repo.endpoint,
    forcePathStyle: true,
    region: repo.region ?? DEFAULT_REGION,
    credentials: { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey },
    maxAttempts: opts.maxAttempts ?? 3,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}


/**
 * Signs a part with a SHA-256 of its body computed already (SigV4's x-amz-content-sha256), so the
 * SDK does not hash the body a second time; the server still checks the body against it.
 */
export function signWithPayloadHash(command: UploadPartCommand, sha256Hex: string): void {
  command.middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { headers?: Record<string, string> };
      if (request.headers) request.headers['x-amz-content-sha256'] = sha256Hex;
      return next(args);
    },
    { step: 'build', name: 'vmsnapPayloadHash' },
  );
}
