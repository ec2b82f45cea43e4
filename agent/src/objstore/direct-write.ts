// Writing downloaded parts with O_DIRECT: the bytes go from the process to the disk without passing
// through the page cache, so a copy that QEMU then reads with O_DIRECT is not in the node's memory
// twice, costs no page-cache copy and no write-back, and has nothing to drop before the load.
// O_DIRECT wants the memory, the file offset and the length aligned to the disk's block size: each
// part's bytes are copied into page-aligned buffers (a WebAssembly memory starts on a page boundary;
// a Buffer need not), and a region that is not aligned (a file's last bytes) is written through
// the page cache instead.
import { open, type FileHandle } from 'node:fs/promises';
import fs from 'node:fs';
import type { Extent } from './plan.js';

// The runtime has it; this project's TypeScript libraries do not declare it.
declare const WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } };

/** Alignment of every O_DIRECT write: covers disks of 512-byte and 4 KiB blocks. */
export const DIRECT_ALIGN = 4096;
const WASM_PAGE = 65536;

export interface WriteChunk {
  /** Where the bytes are in the part's plaintext. */
  plainOffset: number;
  fileOffset: number;
  length: number;
  /** Aligned: written with O_DIRECT through an aligned buffer; else through the page cache. */
  direct: boolean;
}

/** How a part's segments are written: aligned segments in chunks of at most `chunkBytes`, the rest buffered. Pure. */
export function writeChunks(segments: readonly Extent[], chunkBytes: number, align = DIRECT_ALIGN): WriteChunk[] {
  if (chunkBytes <= 0 || chunkBytes % align !== 0) throw new Error(`chunkBytes must be a positive multiple of ${align}, got ${chunkBytes}`);
  const out: WriteChunk[] = [];
  let at = 0;
  for (const seg of segments) {
    if (seg.offset % align !== 0 || seg.length % align !== 0) {
      out.push({ plainOffset: at, fileOffset: seg.offset, length: seg.length, direct: false });
    } else {
      for (let done = 0; done < seg.length; done += chunkBytes) {
        out.push({ plainOffset: at + done, fileOffset: seg.offset + done, length: Math.min(chunkBytes, seg.length - done), direct: true });
      }
    }
    at += seg.length;
  }
  return out;
}

export interface PartWriter {
  /** Writes one part's plaintext at its segments' offsets. */
  write(plain: Buffer, segments: readonly Extent[]): Promise<void>;
  /** Whether a part's bytes may sit in the page cache after write (then synced as they land). */
  readonly buffered: boolean;
  close(): Promise<void>;
}

/** Plain writes through `fh` (the page cache). */
export function bufferedWriter(fh: FileHandle): PartWriter {
  return {
    buffered: true,
    async write(plain, segments) {
      let at = 0;
      for (const seg of segments) {
        await fh.write(plain, at, seg.length, seg.offset);
        at += seg.length;
      }
    },
    close: async () => undefined,
  };
}

/**
 * O_DIRECT writes to `file` (opened already through `fh`, which takes the unaligned regions), or
 * undefined when the filesystem refuses O_DIRECT or no aligned memory can be had.
 */
export async function directWriter(file: string, fh: FileHandle, chunkBytes: number): Promise<PartWriter | undefined> {
  let direct: FileHandle;
  const buffers: Buffer[] = [];
  try {
    direct = await open(file, fs.constants.O_WRONLY | fs.constants.O_DIRECT);
  } catch {
    return undefined;
  }
  const bufferBytes = Math.ceil(chunkBytes / WASM_PAGE) * WASM_PAGE;
  const alignedBuffer = () => buffers.pop() ?? Buffer.from(new WebAssembly.Memory({ initial: bufferBytes / WASM_PAGE }).buffer);
  try {
    buffers.push(alignedBuffer());
  } catch {
    await direct.close();
    return undefined;
  }
  // Refused after all (EINVAL: memory or offsets not aligned as this disk wants): the page cache from then on.
  let refused = false;
  return {
    buffered: false,
    async write(plain, segments) {
      const buf = alignedBuffer();
      try {
        for (const c of writeChunks(segments, bufferBytes)) {
          if (c.direct && !refused) {
            plain.copy(buf, 0, c.plainOffset, c.plainOffset + c.length);
            try {
              const { bytesWritten } = await direct.write(buf, 0, c.length, c.fileOffset);
              if (bytesWritten === c.length) continue;
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
              refused = true;
            }
          }
          const { bytesWritten } = await fh.write(plain, c.plainOffset, c.length, c.fileOffset);
          if (bytesWritten !== c.length) throw new Error(`short write at file offset ${c.fileOffset}: ${bytesWritten} of ${c.length} bytes`);
        }
      } finally {
        buffers.push(buf);
      }
    },
    close: () => direct.close(),
  };
}
