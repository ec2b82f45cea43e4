// The progress line of `kubectl vmsnap --wait`, from an object's status (bytes done and total).
import { Phase, formatBytes } from '../api/index.js';

export interface WaitedStatus {
  phase?: string;
  progress?: { bytesDone?: number; bytesTotal?: number; percent?: number };
  conditions?: Array<{ type: string; reason?: string; message?: string }>;
}

const WIDTH = 30;

/** "[#########.....]  42%  108Mi/256Mi  InProgress", or the phase and reason before bytes flow. */
export function progressLine(status: WaitedStatus | undefined): string {
  const phase = status?.phase ?? Phase.Pending;
  const p = status?.progress;
  if (p?.bytesTotal) {
    const done = Math.min(p.bytesDone ?? 0, p.bytesTotal);
    const pct = phase === Phase.Succeeded ? 100 : Math.floor((100 * done) / p.bytesTotal);
    const filled = Math.round((pct / 100) * WIDTH);
    return `[${'#'.repeat(filled)}${'.'.repeat(WIDTH - filled)}] ${String(pct).padStart(3)}%  ${formatBytes(done)}/${formatBytes(p.bytesTotal)}  ${phase}`;
  }
  const ready = status?.conditions?.find((c) => c.type === 'Ready');
  return ready?.reason && ready.reason !== phase ? `${phase}: ${ready.reason}` : phase;
}
