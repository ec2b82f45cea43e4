// Reading a guest's serial log from a file offset: a restored (relaunched)
// QEMU appends to the same log, so the demos watch the file, not the process.
import fs from 'node:fs';
import { poll } from '../kit/poll.js';

export function waitForLine(file: string, from: number, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  return poll(`the restored guest to print ${re} on ${file}`, () => fs.readFileSync(file, 'utf8').slice(from).match(re), { timeoutMs, intervalMs: 100 });
}
