import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VMSnapshot } from '../../../api/index.js';
import { decideDeletion } from './deletion.js';

const snap = (over: { policy?: 'Delete' | 'Retain'; specPolicy?: 'Delete' | 'Retain'; phase?: string; file?: string; fileDeleted?: boolean; deleting?: boolean } = {}): VMSnapshot =>
  ({
    apiVersion: 'vmsnap.io/v1alpha1',
    kind: 'VMSnapshot',
    metadata: { name: 's', namespace: 'ns', uid: 'u', ...(over.deleting === false ? {} : { deletionTimestamp: '2025-01-01T00:00:00Z' }) },
    spec: { vmName: 'vm', captureMode: 'Paused', afterSnapshot: 'Resume', failureDeadline: '10m', ...(over.specPolicy ? { deletionPolicy: over.specPolicy } : {}) },
    status: {
      phase: over.phase ?? 'Succeeded',
      effective: { channels: 4, directIO: 'Auto', captureMode: 'Paused', afterSnapshot: 'Resume', failureDeadline: '10m', deletionPolicy: over.policy ?? 'Delete' },
      ...(over.file ? { file: { path: over.file } } : {}),
      ...(over.fileDeleted ? { fileDeleted: true } : {}),
    },
  }) as VMSnapshot;

describe('decideDeletion', () => {
  const root = '/snaps';
  const none = new Map<string, number>();

  it('deletes the file under the Delete policy', () => {
    expect(decideDeletion(snap({ file: '/snaps/ns/s-u.vms' }), root, none)).toEqual({ action: 'delete', path: '/snaps/ns/s-u.vms' });
    expect(decideDeletion(snap(), root, none)).toEqual({ action: 'delete' });
  });

  it('keeps the file under Retain, and an edited spec wins over the recorded policy', () => {
    expect(decideDeletion(snap({ policy: 'Retain', file: '/snaps/ns/s-u.vms' }), root, none).action).toBe('none');
    expect(decideDeletion(snap({ policy: 'Delete', specPolicy: 'Retain', file: '/snaps/ns/s-u.vms' }), root, none).action).toBe('none');
    expect(decideDeletion(snap({ policy: 'Retain', specPolicy: 'Delete', file: '/snaps/ns/s-u.vms' }), root, none).action).toBe('delete');
  });

  it('does nothing twice, waits for saves and restores, and refuses paths outside the storage root', () => {
    expect(decideDeletion(snap({ file: '/snaps/ns/s-u.vms', fileDeleted: true }), root, none).action).toBe('none');
    expect(decideDeletion(snap({ file: '/snaps/ns/s-u.vms', deleting: false }), root, none).action).toBe('none');
    expect(decideDeletion(snap({ file: '/snaps/ns/s-u.vms', phase: 'InProgress' }), root, none).action).toBe('wait');
    expect(decideDeletion(snap({ file: '/snaps/ns/s-u.vms' }), root, new Map([['/snaps/ns/s-u.vms', 1]])).action).toBe('wait');
    expect(decideDeletion(snap({ file: '/etc/passwd' }), root, none)).toMatchObject({ action: 'refuse', path: '/etc/passwd' });
    expect(decideDeletion(snap({ file: '/snaps/../etc/passwd' }), root, none).action).toBe('refuse');
  });

  it('sees a symlinked escape', () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-del-'));
    try {
      fs.mkdirSync(path.join(base, 'root'));
      fs.mkdirSync(path.join(base, 'elsewhere'));
      fs.symlinkSync(path.join(base, 'elsewhere'), path.join(base, 'root', 'ns'));
      expect(decideDeletion(snap({ file: path.join(base, 'root', 'ns', 'x.vms') }), path.join(base, 'root'), none).action).toBe('refuse');
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });
});
