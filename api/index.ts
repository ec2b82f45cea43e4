// The vmsnap.io API: the one place operator, agent, tests and generated CRDs take it from.
export * from './common.js';
export * from './format.js';
export * from './vmsnapshot.js';
export * from './vmrestore.js';
export * from './vmsnapshotclass.js';
export * from './vmsnapshotschedule.js';
export * from './repository.js';
export * from './vminventory.js';
export * from './effective.js';
export * from './conditions.js';
export * from './agent-config.js';
export * from './protocol.js';
export { allCrds, crdFiles, type CustomResourceDefinition } from './crd.js';
export { toYaml } from './yaml.js';
export * from './vm-pod.js';
