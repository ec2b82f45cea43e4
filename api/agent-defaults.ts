// Defaults of agent settings that the engine needs too. No zod here: the CLI's lazy restore
// keeps zod off its start-up path, and the engine imports this.

/** How long QEMU may do nothing with a snapshot file before the save or restore fails (MigrationStalled). */
export const DEFAULT_STALL_TIMEOUT_SECONDS = 60;
