// The prefetch process (see prefetch.ts): argv FILE BLOCK-JSON. Requests the
// block's present pages in address order, 64 MiB at a time.
import fs from 'node:fs';
import { native } from '../../native.js';
import { presentPageRanges } from './page-runs.js';
import type { PrefetchBlock } from './prefetch.js';

const STEP = 64 << 20;

const [file, blockJson] = process.argv.slice(2);
if (!file || !blockJson) {
  process.stderr.write('usage: prefetch-main FILE BLOCK-JSON\n');
  process.exit(2);
}
const block = JSON.parse(blockJson) as PrefetchBlock;
const fd = fs.openSync(file, 'r');
try {
  const { fadviseWillNeed } = native();
  for (const r of presentPageRanges(fd, { ...block, pagesPresent: -1 })) {
    for (let at = r.offset; at < r.offset + r.length; at += STEP) fadviseWillNeed(fd, at, Math.min(STEP, r.offset + r.length - at));
  }
} finally {
  fs.closeSync(fd);
}
