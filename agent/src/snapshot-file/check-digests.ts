// The verification mode's check: the RAM pages hashed again and compared with
// the sidecar written after the save. Stops at the first damaged region and
// names its block and offsets. Refuses a sidecar that belongs to another save.
import fs from 'node:fs';
import { SnapshotFileError } from './header.js';
import { closeOutOfPageCache, digestBlock, digestsPath } from './digests.js';
import { SnapshotDigestsSchema, type SnapshotDigests } from './metadata.js';
import type { VerifiedSnapshot } from './verify.js';

export function readDigests(path: string): SnapshotDigests {
  const file = digestsPath(path);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new SnapshotFileError(`${path} has no RAM digests (${file}): it was saved without digests, so its RAM pages cannot be verified`);
    }
    throw new SnapshotFileError(`cannot read ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new SnapshotFileError(`${file} is corrupted (not JSON)`);
  }
  const result = SnapshotDigestsSchema.safeParse(parsed);
  if (!result.success) throw new SnapshotFileError(`${file} is corrupted (invalid at ${result.error.issues[0]?.path.join('.') || '(root)'})`);
  return result.data;
}

export interface DigestCheck {
  algorithm: string;
  regions: number;
  bytesHashed: number;
  durationMs: number;
}

/** Throws a SnapshotFileError naming the block and offsets of the first region whose pages changed. */
export async function checkDigests(path: string, snapshot: VerifiedSnapshot): Promise<DigestCheck> {
  const started = Date.now();
  const stored = readDigests(path);
  const { stream, completedAt } = snapshot.header.metadata;
  const s = stored.snapshot;
  if (s.completedAt !== completedAt || s.endOffset !== stream.endOffset || s.structureCrc32 !== stream.structureCrc32) {
    throw new SnapshotFileError(`${digestsPath(path)} belongs to another save of ${path} (completed ${s.completedAt}, this one ${completedAt})`);
  }
  const blocks = snapshot.layout.blocks;
  if (stored.blocks.length !== blocks.length || stored.blocks.some((b, i) => b.id !== blocks[i]!.id || b.usedLength !== blocks[i]!.usedLength)) {
    throw new SnapshotFileError(`${path} is corrupted: its RAM blocks differ from the ones the digests were computed over`);
  }
  const file = await fs.promises.open(path, 'r');
  let bytesHashed = 0;
  let regions = 0;
  try {
    for (const [i, block] of blocks.entries()) {
      const expected = stored.blocks[i]!.regions;
      bytesHashed += await digestBlock(file, block, stored.algorithm, stored.regionBytes, (r, digest) => {
        regions++;
        if (digest === expected[r]) return;
        const from = r * stored.regionBytes;
        const to = Math.min(from + stored.regionBytes, block.usedLength);
        throw new SnapshotFileError(
          `${path} is corrupted: RAM block ${block.id}, bytes ${from}..${to} (file offset ${block.pagesOffset + from}) ` +
            `differ from the ${stored.algorithm} digest taken after the save`,
        );
      });
    }
  } finally {
    await closeOutOfPageCache(file);
  }
  return { algorithm: stored.algorithm, regions, bytesHashed, durationMs: Date.now() - started };
}
