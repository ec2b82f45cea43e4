// Live progress on stderr: a bar when stderr is a terminal, nothing otherwise
// (scripts read the final line or --json).
import type { Progress } from '../engine/migration.js';

export function progressPrinter(label: string): { update: (p: Progress) => void; done: () => void } | undefined {
  if (!process.stderr.isTTY) return undefined;
  let shown = false;
  return {
    update(p) {
      const width = 30;
      const filled = Math.round((p.percent / 100) * width);
      const mibps = p.elapsedMs > 0 ? p.transferredBytes / (1 << 20) / (p.elapsedMs / 1000) : 0;
      process.stderr.write(
        `\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.percent.toFixed(0).padStart(3)}% ` +
          `${(p.bytesDone / (1 << 20)).toFixed(0)}/${(p.bytesTotal / (1 << 20)).toFixed(0)} MiB ${mibps.toFixed(0)} MiB/s `,
      );
      shown = true;
    },
    done() {
      if (shown) process.stderr.write('\n');
    },
  };
}
