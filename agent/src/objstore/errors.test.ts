// Every case's message says the opposite of its code: a classifier reading the text would fail.
import { classifyS3Error, explainS3Error } from './errors.js';

const err = (message: string, fields: Record<string, unknown>) => Object.assign(new Error(message), fields);

describe('classifyS3Error', () => {
  it('reads Node errno codes, not the message', () => {
    expect(classifyS3Error(err('all good, no socket hang up here', { code: 'ECONNRESET' }))).toMatchObject({ kind: 'unreachable', code: 'ECONNRESET' });
    expect(classifyS3Error(err('fine', { code: 'EPIPE' }))).toMatchObject({ kind: 'unreachable', code: 'EPIPE' });
    // The text names a refused connection; the code says the object was missing.
    expect(classifyS3Error(err('connect ECONNREFUSED 127.0.0.1:9 socket hang up EPIPE', { name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } }))).toMatchObject({
      kind: 'notFound',
      code: 'NoSuchKey',
    });
    expect(classifyS3Error(err('socket hang up', {})).kind).toBe('other');
  });

  it('finds the errno on a cause or inside an AggregateError', () => {
    const refused = err('ok', { code: 'ECONNREFUSED' });
    expect(classifyS3Error(err('the bucket does not exist', { cause: refused }))).toMatchObject({ kind: 'unreachable', code: 'ECONNREFUSED' });
    const aggregate = Object.assign(new AggregateError([err('x', { code: 'EHOSTUNREACH' }), refused], 'NoSuchBucket'), {});
    expect(classifyS3Error(aggregate)).toMatchObject({ kind: 'unreachable', code: 'EHOSTUNREACH' });
    expect(classifyS3Error(err('request completed', { name: 'TimeoutError' }))).toMatchObject({ kind: 'unreachable', code: 'TimeoutError' });
  });

  it('reads the S3 code and the HTTP status', () => {
    expect(classifyS3Error(err('connect ECONNREFUSED', { name: 'SignatureDoesNotMatch', $metadata: { httpStatusCode: 403 } }))).toMatchObject({ kind: 'credentials', code: 'SignatureDoesNotMatch' });
    expect(classifyS3Error(err('NoSuchBucket', { name: 'Error', $metadata: { httpStatusCode: 403 } }))).toMatchObject({ kind: 'credentials', status: 403 });
    expect(classifyS3Error(err('AccessDenied: wrong key', { name: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } })).kind).toBe('noBucket');
    expect(classifyS3Error(err('InvalidAccessKeyId', { Code: 'InternalError', $metadata: { httpStatusCode: 500 } }))).toMatchObject({ kind: 'other', code: 'InternalError', status: 500 });
  });
});

describe('explainS3Error', () => {
  it('says what was being done and what to do, keeps the code and the original as cause', () => {
    const original = err('socket hang up', { code: 'ECONNRESET' });
    const out = explainS3Error(original, 'uploading part 3 to s3 bucket b at p/');
    expect(out.message).toBe('uploading part 3 to s3 bucket b at p/: the object server is unreachable or dropped the connection (ECONNRESET: socket hang up)');
    expect(out).toMatchObject({ kind: 'unreachable', code: 'ECONNRESET', cause: original });
    expect(explainS3Error(err('socket hang up', { name: 'InvalidAccessKeyId', $metadata: { httpStatusCode: 403 } }), 'checking bucket b').message).toBe(
      "checking bucket b: the repository refused the credentials (InvalidAccessKeyId): check the repository's credentialsSecret",
    );
    expect(explainS3Error(err('ECONNREFUSED', { name: 'NoSuchBucket' }), 'x').message).toBe('x: the bucket does not exist: create it or fix repository.bucket');
  });
});
