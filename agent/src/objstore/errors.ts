// S3 errors turned into what the user must do: wrong credentials, a missing bucket and an
// unreachable endpoint each say so.
export function explainS3Error(err: unknown, doing: string): Error {
  const e = err as { name?: string; Code?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const code = e.Code ?? e.name ?? '';
  const status = e.$metadata?.httpStatusCode;
  let reason: string;
  if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken'].includes(code) || status === 403) {
    reason = `the repository refused the credentials (${code || 'HTTP 403'}): check the repository's credentialsSecret`;
  } else if (code === 'NoSuchBucket') {
    reason = 'the bucket does not exist: create it or fix repository.bucket';
  } else if (code === 'NoSuchKey' || status === 404) {
    reason = `not found (${code || 'HTTP 404'})`;
  } else if (['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH'].includes(e.code ?? '') || /ECONNREFUSED|ECONNRESET|socket hang up|EPIPE/.test(e.message ?? '')) {
    reason = `the object server is unreachable or dropped the connection (${e.code ?? e.message})`;
  } else {
    reason = `${code || 'error'}${status ? ` (HTTP ${status})` : ''}: ${e.message ?? String(err)}`;
  }
  const out = new Error(`${doing}: ${reason}`);
  (out as Error & { code?: string }).code = code || e.code;
  return out;
}
