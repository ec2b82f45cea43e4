import type { VMSnapshot } from '../../../api/index.js';
import { parseRepositorySecrets } from './access.js';
import { shouldUpload } from './uploads.js';

const repository = { endpoint: 'http://127.0.0.1:8333', bucket: 'snaps', credentialsSecret: 's3' };
const snap = (status: Record<string, unknown>, meta: Record<string, unknown> = {}): VMSnapshot =>
  ({
    metadata: { name: 's', namespace: 'a', uid: 'u', ...meta },
    spec: { vmName: 'vm1' },
    status: { phase: 'Succeeded', readyToUse: true, nodeName: 'node-a', file: { path: '/x/a/s-u.vms' }, effective: { channels: 4, repository }, ...status },
  }) as unknown as VMSnapshot;

describe('shouldUpload', () => {
  it('uploads a finished snapshot of a class with a repository, on its own node, once', () => {
    expect(shouldUpload(snap({}), 'node-a', false)).toBe(true);
    expect(shouldUpload(snap({}), 'node-a', true)).toBe(false);
    expect(shouldUpload(snap({}), 'node-b', false)).toBe(false);
    expect(shouldUpload(snap({ upload: { phase: 'Uploaded' } }), 'node-a', false)).toBe(false);
    expect(shouldUpload(snap({ upload: { phase: 'Failed' } }), 'node-a', false)).toBe(false);
  });
  it('starts over an upload a stopped agent left Uploading', () => {
    expect(shouldUpload(snap({ upload: { phase: 'Uploading' } }), 'node-a', false)).toBe(true);
  });
  it('never for unfinished, deleted or repository-less snapshots', () => {
    expect(shouldUpload(snap({ phase: 'InProgress', readyToUse: false }), 'node-a', false)).toBe(false);
    expect(shouldUpload(snap({ effective: { channels: 4 } }), 'node-a', false)).toBe(false);
    expect(shouldUpload(snap({}, { deletionTimestamp: '2026-01-01T00:00:00Z' }), 'node-a', false)).toBe(false);
  });
});

describe('parseRepositorySecrets', () => {
  const creds = { accessKeyId: Buffer.from('id'), secretAccessKey: Buffer.from('secret') };
  it('reads the credentials and a 32-byte key', () => {
    const key = Buffer.alloc(32, 7);
    expect(parseRepositorySecrets({ ...repository, encryptionKeySecret: 'k' }, creds, { key })).toEqual({ credentials: { accessKeyId: 'id', secretAccessKey: 'secret' }, key });
    expect(parseRepositorySecrets(repository, creds, undefined)).toEqual({ credentials: { accessKeyId: 'id', secretAccessKey: 'secret' } });
  });
  it('names the Secret and what is missing', () => {
    expect(() => parseRepositorySecrets(repository, { accessKeyId: Buffer.from('id') }, undefined)).toThrow(/credentialsSecret: Secret s3 has no secretAccessKey/);
    expect(() => parseRepositorySecrets({ ...repository, encryptionKeySecret: 'k' }, creds, { key: Buffer.alloc(16) })).toThrow(
      /encryptionKeySecret: Secret k must hold exactly 32 bytes under "key" \(it holds 16\)/,
    );
  });
});
