// Which VMSnapshot a VMRestore restores: spec.snapshotName, or for spec.latestSnapshotOf the
// newest Succeeded snapshot of that VM, chosen once and kept in status.snapshotName (a newer
// snapshot appearing while the restore waits for its VM does not change what it restores).
import { Phase, type VMRestore, type VMSnapshot } from '../api/index.js';
import { timeOf } from './world.js';

export type RestoreSource =
  | { kind: 'named'; name: string; field: 'spec.snapshotName' | 'status.snapshotName' }
  | { kind: 'choose'; name: string; vmName: string }
  | { kind: 'none'; vmName: string };

/** The VM's newest restorable snapshot: Succeeded, ready, not being deleted; newest completionTime wins. */
export function latestSucceededSnapshot(snapshots: readonly VMSnapshot[], namespace: string, vmName: string): VMSnapshot | undefined {
  const when = (s: VMSnapshot) => timeOf(s.status?.completionTime) || timeOf(s.metadata.creationTimestamp);
  return snapshots
    .filter((s) => s.metadata.namespace === namespace && s.spec.vmName === vmName && !s.metadata.deletionTimestamp)
    .filter((s) => s.status?.phase === Phase.Succeeded && s.status.readyToUse === true)
    .reduce<VMSnapshot | undefined>((best, s) => {
      if (!best) return s;
      const d = when(s) - when(best);
      return d > 0 || (d === 0 && (s.metadata.name ?? '') > (best.metadata.name ?? '')) ? s : best;
    }, undefined);
}

export function restoreSource(restore: VMRestore, snapshots: readonly VMSnapshot[]): RestoreSource {
  if (restore.spec.snapshotName) return { kind: 'named', name: restore.spec.snapshotName, field: 'spec.snapshotName' };
  if (restore.status?.snapshotName) return { kind: 'named', name: restore.status.snapshotName, field: 'status.snapshotName' };
  const vmName = restore.spec.latestSnapshotOf ?? '';
  const latest = latestSucceededSnapshot(snapshots, restore.metadata.namespace ?? '', vmName);
  return latest ? { kind: 'choose', name: latest.metadata.name!, vmName } : { kind: 'none', vmName };
}
