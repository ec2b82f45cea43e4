// Jest runs the TypeScript sources as native ESM (client-node 1.x is ESM-only),
// so every project uses ts-jest's ESM preset and maps the `.js` import suffix
// that NodeNext resolution requires back to the `.ts` source.
const esm = {
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json', diagnostics: { ignoreCodes: [151001, 151002] } }] },
  testEnvironment: 'node',
};

export default {
  // Engine and cluster tests boot real guests and a real API server; unit tests finish far sooner.
  testTimeout: 240_000,
  projects: [
    { ...esm, displayName: 'unit', testMatch: ['<rootDir>/{api,agent,operator,plugin,bench}/**/*.test.ts'] },
    // The node engine on real QEMU guests, and the test kit's own tests (it launches QEMU too).
    { ...esm, displayName: 'engine', testMatch: ['<rootDir>/test/engine/**/*.test.ts', '<rootDir>/kit/**/*.test.ts'] },
    { ...esm, displayName: 'cluster', testMatch: ['<rootDir>/test/cluster/**/*.test.ts'] },
    { ...esm, displayName: 'e2e', testMatch: ['<rootDir>/test/e2e/**/*.test.ts'] },
    // A real node (kubelet, containerd, scheduler, controller-manager) in its own instance.
    { ...esm, displayName: 'node', testMatch: ['<rootDir>/test/node/**/*.test.ts'] },
    { ...esm, displayName: 'load', testMatch: ['<rootDir>/test/load/**/*.test.ts'] },
    // kill -9 of every component during saves and restores, and a full disk.
    { ...esm, displayName: 'chaos', testMatch: ['<rootDir>/test/chaos/**/*.test.ts'] },
    // Uploads and downloads against a real S3 server (SeaweedFS).
    { ...esm, displayName: 'objstore', testMatch: ['<rootDir>/test/objstore/**/*.test.ts'] },
  ],
};
