// S3 errors turned into what the user must do: wrong credentials, a missing bucket and an
// unreachable endpoint each say so. Decided from what the SDK and Node set on the error (the S3
// error code as `name`/`Code`, the HTTP status in `$metadata`, Node's errno `code`, also on a
// `cause` or an AggregateError's `errors`), never from its message.

export type S3ErrorKind = 'credentials' | 'noBucket' | 'notFound' | 'unreachable' | 'other';

/** Node's errno codes of a connection that could not be made or was dropped. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'ENOTFOUND', 'EAI_AGAIN']);
/** The SDK's own names for a request that got no answer in time. */
const NETWORK_NAMES = new Set(['TimeoutError', 'RequestTimeout']);
const CREDENTIAL_CODES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'Forbidden']);

interface ErrorFields {
  name?: unknown;
  Code?: unknown;
  code?: unknown;
  cause?: unknown;
  errors?: unknown;
  $metadata?: { httpStatusCode?: number };
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** Node's errno code of the error, its cause chain or an AggregateError's members (the first found). */
export function networkCode(err: unknown, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 5) return undefined;
  const e = err as ErrorFields;
  const code = str(e.code);
  if (code && NETWORK_CODES.has(code)) return code;
  const name = str(e.name);
  if (name && NETWORK_NAMES.has(name)) return name;
  for (const inner of [e.cause, ...(Array.isArray(e.errors) ? e.errors : [])]) {
    const found = networkCode(inner, depth + 1);
    if (found) return found;
  }
  return undefined;
}

/** Pure: what kind of failure an SDK error is, and the code that says so. */
export function classifyS3Error(err: unknown): { kind: S3ErrorKind; code?: string; status?: number } {
  const e = (err && typeof err === 'object' ? err : {}) as ErrorFields;
  const status = e.$metadata?.httpStatusCode;
  const s3Code = str(e.Code) ?? (str(e.name) !== 'Error' ? str(e.name) : undefined);
  if ((s3Code && CREDENTIAL_CODES.has(s3Code)) || status === 403) return { kind: 'credentials', code: s3Code, status };
  if (s3Code === 'NoSuchBucket') return { kind: 'noBucket', code: s3Code, status };
  if (s3Code === 'NoSuchKey' || s3Code === 'NotFound' || status === 404) return { kind: 'notFound', code: s3Code, status };
  const net = networkCode(err);
  if (net) return { kind: 'unreachable', code: net, status };
  return { kind: 'other', code: s3Code ?? str(e.code), status };
}

/** An error whose message says what was being done and what the user must do; `kind` and `code` for callers. */
export class S3Error extends Error {
  override name = 'S3Error';
  constructor(
    message: string,
    readonly kind: S3ErrorKind,
    readonly code: string | undefined,
    cause: unknown,
  ) {
    super(message, { cause });
  }
}

export function explainS3Error(err: unknown, doing: string): S3Error {
  const { kind, code, status } = classifyS3Error(err);
  const message = (err as { message?: unknown } | undefined)?.message;
  const detail = typeof message === 'string' && message !== '' ? message : String(err);
  const reason = {
    credentials: () => `the repository refused the credentials (${code ?? 'HTTP 403'}): check the repository's credentialsSecret`,
    noBucket: () => 'the bucket does not exist: create it or fix repository.bucket',
    notFound: () => `not found (${code ?? 'HTTP 404'})`,
    unreachable: () => `the object server is unreachable or dropped the connection (${code}: ${detail})`,
    other: () => `${code ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${detail}`,
  }[kind]();
  return new S3Error(`${doing}: ${reason}`, kind, code, err);
}
