// Encoding of one part: optional zstd compression, then optional AES-256-GCM encryption, and a
// SHA-256 of the plaintext so a download proves each part before it writes a byte of it.
// zstd runs as the `zstd` program with a fixed argv (Node 20 has no zstd in zlib); nothing it is
// given comes from a tenant beyond the bytes on its stdin.
import { spawn } from 'node:child_process';
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';

export type Compression = 'None' | 'Zstd';

export interface EncodeOptions {
  compression: Compression;
  /** 32 bytes: AES-256-GCM. Absent: stored in the clear. */
  key?: Buffer;
  /** Binds the ciphertext to its object and part, so parts cannot be swapped or replayed. */
  aad: string;
}

export interface EncodedPart {
  data: Buffer;
  sha256: string;
  /** base64, present when encrypted. */
  nonce?: string;
}

const GCM_TAG_BYTES = 16;
export const ENCRYPTION_KEY_BYTES = 32;

export function sha256Hex(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** A value that tells whether a key is the one an object was written with, without revealing it. */
export function keyCheck(key: Buffer): string {
  return createHmac('sha256', key).update('vmsnap repository key check v1').digest('hex');
}

function runZstd(args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('zstd', ['-q', '-c', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new Error(`zstd could not run (install the zstd program): ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`zstd ${args.join(' ')} exited ${code}: ${Buffer.concat(err).toString().trim()}`));
    });
    child.stdin.on('error', () => undefined); // the close handler reports the failure
    child.stdin.end(input);
  });
}

export async function encodePart(plain: Buffer, opts: EncodeOptions): Promise<EncodedPart> {
  const sha256 = sha256Hex(plain);
  let data = opts.compression === 'Zstd' ? await runZstd(['-3'], plain) : plain;
  if (!opts.key) return { data, sha256 };
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', opts.key, nonce);
  cipher.setAAD(Buffer.from(opts.aad));
  data = Buffer.concat([cipher.update(data), cipher.final(), cipher.getAuthTag()]);
  return { data, sha256, nonce: nonce.toString('base64') };
}

export interface DecodeOptions extends EncodeOptions {
  nonce?: string;
  sha256: string;
  plainBytes: number;
  /** Names the part in errors. */
  what: string;
}

/** The part's plaintext, or an error naming the part when any byte of it was changed. */
export async function decodePart(stored: Buffer, opts: DecodeOptions): Promise<Buffer> {
  let data = stored;
  if (opts.key) {
    if (!opts.nonce) throw new Error(`${opts.what}: the manifest has no nonce for an encrypted part`);
    if (data.length < GCM_TAG_BYTES) throw new Error(`${opts.what}: stored part is truncated (${data.length} bytes)`);
    const decipher = createDecipheriv('aes-256-gcm', opts.key, Buffer.from(opts.nonce, 'base64'));
    decipher.setAAD(Buffer.from(opts.aad));
    decipher.setAuthTag(data.subarray(data.length - GCM_TAG_BYTES));
    try {
      data = Buffer.concat([decipher.update(data.subarray(0, data.length - GCM_TAG_BYTES)), decipher.final()]);
    } catch {
      throw new Error(`${opts.what}: the stored bytes fail AES-256-GCM authentication (changed in storage or in transit)`);
    }
  }
  if (opts.compression === 'Zstd') {
    try {
      data = await runZstd(['-d'], data);
    } catch (err) {
      throw new Error(`${opts.what}: the stored bytes do not decompress (${(err as Error).message})`);
    }
  }
  if (data.length !== opts.plainBytes) {
    throw new Error(`${opts.what}: decoded to ${data.length} bytes, the manifest says ${opts.plainBytes}`);
  }
  if (sha256Hex(data) !== opts.sha256) {
    throw new Error(`${opts.what}: SHA-256 of the downloaded bytes does not match the manifest (changed in storage or in transit)`);
  }
  return data;
}
