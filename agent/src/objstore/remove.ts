// Removes a snapshot's copy from its repository (deletionPolicy Delete): the manifest first, so
// the copy stops counting at once, then the data and digests, and any multipart upload left
// unfinished under the prefix. What is already gone (or a bucket that no longer exists) is fine.
import { AbortMultipartUploadCommand, DeleteObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { classifyS3Error, explainS3Error } from './errors.js';
import { OBJECT_KEYS } from './manifest.js';
import type { TransferTarget } from './upload.js';

const gone = (err: unknown) => {
  const { kind, code } = classifyS3Error(err);
  return kind === 'notFound' || kind === 'noBucket' || code === 'NoSuchUpload';
};

export async function removeUploadedSnapshot(target: Pick<TransferTarget, 'client' | 'bucket' | 'prefix'>): Promise<void> {
  const where = `s3 bucket ${target.bucket} at ${target.prefix}`;
  for (const key of [OBJECT_KEYS.manifest, OBJECT_KEYS.data, OBJECT_KEYS.digests]) {
    await target.client.send(new DeleteObjectCommand({ Bucket: target.bucket, Key: target.prefix + key })).catch((err) => {
      if (!gone(err)) throw explainS3Error(err, `removing ${key} from ${where}`);
    });
  }
  const pending = await target.client.send(new ListMultipartUploadsCommand({ Bucket: target.bucket, Prefix: target.prefix })).catch((err) => {
    if (gone(err)) return { Uploads: [] };
    throw explainS3Error(err, `listing unfinished uploads in ${where}`);
  });
  for (const u of pending.Uploads ?? []) {
    await target.client.send(new AbortMultipartUploadCommand({ Bucket: target.bucket, Key: u.Key!, UploadId: u.UploadId! })).catch((err) => {
      if (!gone(err)) throw explainS3Error(err, `aborting an unfinished upload in ${where}`);
    });
  }
}
