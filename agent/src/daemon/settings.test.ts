import type { EffectiveRestoreSpec, EffectiveSnapshotSpec } from '../../../api/index.js';
import { directIOMode, readsWithDirectIO, restoreSettings, saveSettings } from './settings.js';

const snapshot = (over: Partial<EffectiveSnapshotSpec> = {}): EffectiveSnapshotSpec => ({
  channels: 4,
  directIO: 'Auto',
  captureMode: 'Paused',
  afterSnapshot: 'Resume',
  failureDeadline: '10m',
  deletionPolicy: 'Delete',
  ...over,
});

describe('settings mapping', () => {
  it('maps directIO to the engine modes', () => {
    expect([directIOMode('Auto'), directIOMode('Always'), directIOMode('Never')]).toEqual(['auto', 'on', 'off']);
  });

  it('maps the effective snapshot settings', () => {
    expect(saveSettings(snapshot())).toEqual({ channels: 4, directIO: 'auto', live: false, after: 'resume' });
    expect(saveSettings(snapshot({ channels: 16, directIO: 'Always', captureMode: 'Live', afterSnapshot: 'Stop' }))).toEqual({
      channels: 16,
      directIO: 'on',
      live: true,
      after: 'stop',
    });
  });

  it('maps the effective restore settings', () => {
    const e: EffectiveRestoreSpec = {
      snapshotName: 's',
      sourceVMName: 'a',
      targetVMName: 'a',
      copy: false,
      channels: 8,
      directIO: 'Never',
      ifRunning: 'Fail',
      afterRestore: 'Running',
      restoreMode: 'Eager',
    };
    expect(restoreSettings(e)).toEqual({ channels: 8, directIO: 'off', paused: false, replaceRunning: false });
    expect(restoreSettings({ ...e, afterRestore: 'Paused', ifRunning: 'Replace' })).toMatchObject({ paused: true, replaceRunning: true });
    expect(restoreSettings({ ...e, restoreMode: 'Lazy', prefetch: 'None' }).lazy).toEqual({ prefetch: false });
    expect(restoreSettings({ ...e, restoreMode: 'Lazy' }).lazy).toEqual({ prefetch: true });
  });
  it('reads with direct I/O only an eager restore whose directIO is not Never', () => {
    const base = restoreSettings({ snapshotName: 's', sourceVMName: 'a', targetVMName: 'a', copy: false, channels: 4, directIO: 'Auto', ifRunning: 'Fail', afterRestore: 'Running', restoreMode: 'Eager' });
    expect(readsWithDirectIO(base)).toBe(true);
    expect(readsWithDirectIO({ ...base, directIO: 'on' })).toBe(true);
    expect(readsWithDirectIO({ ...base, directIO: 'off' })).toBe(false);
    expect(readsWithDirectIO({ ...base, lazy: { prefetch: true } })).toBe(false);
  });
});
