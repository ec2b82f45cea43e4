// Reading a guest's serial log from a file offset: a restored (relaunched)
// QEMU appends to the same log, so the demos watch the file, not the process.
import fs from 'node:fs';

export async function waitForLine(file: string, from: number, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = fs.readFileSync(file, 'utf8').slice(from).match(re);
    if (m) return m;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the restored guest printed nothing on ${file} within ${timeoutMs / 1000} s`);
}
