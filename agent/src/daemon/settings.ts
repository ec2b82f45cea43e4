// The settings in force (status.effective, recorded by the operator) in the
// engine's terms.
import { Prefetch, legacyPrefetch, type EffectiveRestoreSpec, type EffectiveSnapshotSpec } from '../../../api/index.js';
import type { DirectIOMode } from '../snapshot-file/metadata.js';

const DIRECT_IO: Record<EffectiveSnapshotSpec['directIO'], DirectIOMode> = { Auto: 'auto', Always: 'on', Never: 'off' };

export function directIOMode(mode: EffectiveSnapshotSpec['directIO']): DirectIOMode {
  return DIRECT_IO[mode];
}

export interface SaveSettings {
  channels: number;
  directIO: DirectIOMode;
  live: boolean;
  after: 'resume' | 'stop';
}

export function saveSettings(e: EffectiveSnapshotSpec): SaveSettings {
  return {
    channels: e.channels,
    directIO: directIOMode(e.directIO),
    live: e.captureMode === 'Live',
    after: e.afterSnapshot === 'Stop' ? 'stop' : 'resume',
  };
}

export interface RestoreSettings {
  channels: number;
  directIO: DirectIOMode;
  paused: boolean;
  replaceRunning: boolean;
  /** Present for restoreMode Lazy. */
  lazy?: { prefetch: boolean };
}

export function restoreSettings(e: EffectiveRestoreSpec): RestoreSettings {
  return {
    channels: e.channels,
    directIO: directIOMode(e.directIO),
    paused: e.afterRestore === 'Paused',
    replaceRunning: e.ifRunning === 'Replace',
    ...(e.restoreMode === 'Lazy' ? { lazy: { prefetch: (legacyPrefetch(e.prefetch) ?? Prefetch.Background) === Prefetch.Background } } : {}),
  };
}

/**
 * Whether the restore reads the snapshot file with O_DIRECT (an eager restore whose directIO is
 * not Never): a fetched copy is then left out of the page cache (objstore/fetch.ts). A lazy
 * restore maps the file, so its cached pages help it.
 */
export function readsWithDirectIO(s: RestoreSettings): boolean {
  return !s.lazy && s.directIO !== 'off';
}
