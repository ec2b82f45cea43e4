// The live capture's convergence methods, without zod: the snapshot header's schema (zod/mini,
// agent/src/snapshot-file/metadata.ts) and the API's (api/common.ts) share this one list.
export const CONVERGENCE_METHODS = ['DirtyLimit', 'AutoConverge', 'None'] as const;
