// A dependency-free SVG bar chart: save and restore throughput per
// configuration against the fio (the disk's limit) and legacy-stream yardsticks.
import type { Row } from './run.js';

const W = 900;
const BAR = 9;
const GROUP_GAP = 14;

export function renderSvg(rows: Row[]): string {
  const series: Array<[string, string, (r: Row) => number]> = [
    ['save', '#1f77b4', (r) => r.saveMiBps],
    ['fio write (O_DIRECT)', '#aec7e8', (r) => r.fioWriteMiBps],
    ['legacy save', '#c7c7c7', (r) => r.legacySaveMiBps],
    ['restore', '#d62728', (r) => r.restoreMiBps],
    ['fio read (O_DIRECT)', '#ff9896', (r) => r.fioReadMiBps],
    ['legacy restore', '#8c8c8c', (r) => r.legacyRestoreMiBps],
  ];
  const max = Math.max(1, ...rows.flatMap((r) => series.map(([, , f]) => f(r))));
  const groupH = series.length * BAR + GROUP_GAP;
  const top = 50;
  const left = 170;
  const H = top + rows.length * groupH + 40;
  const scale = (v: number) => ((W - left - 80) * v) / max;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="20" font-size="14" font-weight="bold">vmsnap throughput (MiB/s), same run, same disk</text>`,
  ];
  series.forEach(([name, color], i) => {
    out.push(`<rect x="${left + i * 120}" y="30" width="10" height="10" fill="${color}"/><text x="${left + i * 120 + 14}" y="39">${name}</text>`);
  });
  rows.forEach((r, g) => {
    const y0 = top + g * groupH;
    out.push(`<text x="${left - 6}" y="${y0 + (series.length * BAR) / 2 + 4}" text-anchor="end">${r.sizeGiB} GiB, ${r.channels} ch, ${r.directIO ? 'O_DIRECT' : 'buffered'}</text>`);
    series.forEach(([, color, f], i) => {
      const v = f(r);
      out.push(`<rect x="${left}" y="${y0 + i * BAR}" width="${scale(v).toFixed(1)}" height="${BAR - 1}" fill="${color}"/>`);
      out.push(`<text x="${left + scale(v) + 3}" y="${y0 + i * BAR + BAR - 1}" font-size="8">${Math.round(v)}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
