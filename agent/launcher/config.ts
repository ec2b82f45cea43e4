// The launcher's settings, from the VM container's environment (the pod's command line is QEMU's).
import { LauncherStartModeSchema, VM_LAUNCHER_START_ENV, VM_RUN_DIR_ENV, VM_RUN_MOUNT, type LauncherStartMode } from '../../api/vm-pod.js';
import { runPaths, type RunPaths } from './argv.js';

export interface LauncherConfig {
  paths: RunPaths;
  start: LauncherStartMode;
  /** How long QEMU gets after SIGTERM before SIGKILL. */
  stopGraceMs: number;
  /** How long a started QEMU gets to accept a connection on its QMP socket. */
  qmpReadyTimeoutMs: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function positiveMs(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${name}=${raw}: expected a positive whole number of milliseconds`);
  return n;
}

/** Longest unix socket path the kernel takes (sun_path is 108 bytes with its NUL). */
const UNIX_PATH_MAX_BYTES = 107;

/** The run directory's paths, refused when a socket path would not fit a unix socket address. */
function checkedRunPaths(runDir: string): RunPaths {
  const paths = runPaths(runDir);
  for (const p of [paths.qmpSocket, paths.launcherSocket]) {
    const bytes = Buffer.byteLength(p);
    if (bytes > UNIX_PATH_MAX_BYTES) {
      throw new ConfigError(
        `${VM_RUN_DIR_ENV}=${runDir}: the socket ${p} would be ${bytes} bytes long, over the ${UNIX_PATH_MAX_BYTES} a unix socket path may have; use a shorter run directory`,
      );
    }
  }
  return paths;
}

export function launcherConfig(env: NodeJS.ProcessEnv): LauncherConfig {
  const startRaw = env[VM_LAUNCHER_START_ENV] || 'run';
  const start = LauncherStartModeSchema.safeParse(startRaw);
  if (!start.success) throw new ConfigError(`${VM_LAUNCHER_START_ENV}=${startRaw}: expected one of ${LauncherStartModeSchema.options.join(', ')}`);
  return {
    paths: checkedRunPaths(env[VM_RUN_DIR_ENV] || VM_RUN_MOUNT),
    start: start.data,
    // Below the pod's default terminationGracePeriodSeconds (30 s), so a pod deletion still
    // stops QEMU itself and not only through the kubelet's SIGKILL.
    stopGraceMs: positiveMs(env, 'VMSNAP_QEMU_STOP_GRACE_MS', 10_000),
    qmpReadyTimeoutMs: positiveMs(env, 'VMSNAP_QMP_READY_TIMEOUT_MS', 30_000),
  };
}
