// VMSnapshotClass: cluster-wide defaults for VMSnapshots, like a StorageClass. Its settings are
// top-level fields (no spec), as in StorageClass and VolumeSnapshotClass.
import { z } from 'zod';
import {
  API_VERSION,
  DEFAULT_CLASS_ANNOTATION,
  ObjectMetaSchema,
  ParallelismSchema,
  VMSNAPSHOTCLASS_KIND,
  deletionPolicyField,
  DIGESTS_DOC,
  digestsField,
  directIOField,
} from './common.js';
import { RepositorySchema } from './repository.js';

/** The settings a class carries; each one applies when a VMSnapshot leaves it unset. */
export const VMSnapshotClassFieldsSchema = z.object({
  parallelism: ParallelismSchema.optional(),
  directIO: directIOField().optional(),
  deletionPolicy: deletionPolicyField().optional(),
  digests: digestsField()
    .describe(`Verification mode for VMSnapshots of this class that leave spec.digests unset: ${DIGESTS_DOC}`)
    .optional(),
  repository: RepositorySchema.optional(),
});
export type VMSnapshotClassFields = z.infer<typeof VMSnapshotClassFieldsSchema>;

export const VMSnapshotClassSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(VMSNAPSHOTCLASS_KIND),
  metadata: ObjectMetaSchema,
  ...VMSnapshotClassFieldsSchema.shape,
});
export type VMSnapshotClass = z.infer<typeof VMSnapshotClassSchema>;
export type VMSnapshotClassInput = z.input<typeof VMSnapshotClassSchema>;

export function isDefaultClass(cls: Pick<VMSnapshotClass, 'metadata'>): boolean {
  return cls.metadata.annotations?.[DEFAULT_CLASS_ANNOTATION] === 'true';
}
