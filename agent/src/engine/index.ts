// The engine as the node daemon sees it: every operation the daemon needs, from one module. The
// CLI loads the save and restore modules itself, on demand, to start fast.

// Save and restore.
export { saveVm, SaveError, type SaveOptions, type SaveResult } from './save.js';
export { restoreVm, RestoreError, type RestoreResult } from './restore.js';
export { relaunchArgv, type ArgvRewrite } from './launch.js';
export { agentLaunchLogPath, openRegular } from './private-files.js';

// Recovering what an interrupted save or restore left: draining QEMU's migration, finishing a file.
export { drainMigration, eitherSignal, waitForMigration, type MigrationInfo } from './migration.js';
export { finishSnapshotFile } from './finish.js';
export { allocatedBytes } from './file-stats.js';

// Bounds on QEMU's progress: a save or load that stands still fails with MigrationStalledError.
export { fileWriteMeasure, MigrationStalledError, processReadMeasure, watchProgress } from './stall.js';

// Lazy restores: the plan of a relaunch and the residency of a mapped snapshot.
export { eagerArgv, lazyBackingOf } from './lazy/plan.js';
export { lazyResidency, qemusMapping, type LazyResidency } from './lazy/residency.js';

// Disks frozen with the RAM: their overlays, the ledger of what the agent created, and merges.
export { layersOn, mergeIntoBase, qcow2Backing, VMSNAP_LAYER } from './disk-merge.js';
export { writableDisks, type BlockInfo } from './disks.js';
export { OverlayLedger } from './overlay-ledger.js';

// The node's header key (binds a snapshot file to its VMSnapshot).
export { nodeHeaderKey } from './header-key.js';
