// Human-readable renderings for the status fields that printer columns show
// (kubectl can only print a field as it is; it cannot format bytes or milliseconds).

const BINARY_UNITS = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi'];

/** 4294967296 -> "4Gi", 1610612736 -> "1.5Gi", 1000 -> "1000" (Kubernetes quantity suffixes). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < BINARY_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${trimNumber(value)}${BINARY_UNITS[unit]}`;
}

/** 850 -> "850ms", 12345 -> "12.3s", 125000 -> "2m5s", 3720000 -> "1h2m". */
export function formatDurationMs(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${trimNumber(ms / 1000)}s`;
  const totalSeconds = Math.round(ms / 1000);
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (hours > 0) return minutes > 0 ? `${hours}h${minutes}m` : `${hours}h`;
  return seconds > 0 ? `${minutes}m${seconds}s` : `${minutes}m`;
}

/** MiB per second for `bytes` moved in `ms`; 0 when the duration is unknown. */
export function throughputMiBps(bytes: number, ms: number): number {
  if (!(ms > 0) || !(bytes >= 0)) return 0;
  return Math.round((bytes / (1024 * 1024) / (ms / 1000)) * 10) / 10;
}

/** 950 -> "950MiB/s", 1843.2 -> "1.8GiB/s". */
export function formatThroughput(mibPerSecond: number): string {
  if (!Number.isFinite(mibPerSecond) || mibPerSecond < 0) return '';
  if (mibPerSecond >= 1024) return `${trimNumber(mibPerSecond / 1024)}GiB/s`;
  return `${trimNumber(mibPerSecond)}MiB/s`;
}

// One decimal below 100, none above: "1.5", "12.3", "512".
function trimNumber(value: number): string {
  const rounded = value < 100 ? Math.round(value * 10) / 10 : Math.round(value);
  return String(rounded);
}

/** The display-only status fields for a finished transfer (printer columns read these). */
export function transferDisplay(bytes: number, durationMs: number): {
  durationHuman: string;
  throughputMiBps: number;
  throughputHuman: string;
} {
  const mibps = throughputMiBps(bytes, durationMs);
  return { durationHuman: formatDurationMs(durationMs), throughputMiBps: mibps, throughputHuman: formatThroughput(mibps) };
}
