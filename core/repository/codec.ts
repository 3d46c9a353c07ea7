import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import { Compressor, Decompressor } from 'zstd-napi';
import { CorruptImageError } from '../errors.ts';

/**
 * The blob codec: how a chunk, a chunk table or a manifest is turned into the bytes a storage
 * target holds, and back. Pure functions of the data and the keys, so that they run the same in
 * the main thread, in the chunk workers and in an off-host proxy.
 *
 * Blob layout (docs/repository-format.md):
 *   "SPB" | version (1) | flags (bit 0 zstd, bit 1 AES-256-GCM) | payload
 *   payload, encrypted: nonce (12) | ciphertext | tag (16), additional data = the 5-byte header + the blob's name
 */
export const BLOB_MAGIC = Buffer.from('SPB', 'ascii');
export const BLOB_VERSION = 1;
export const FLAG_ZSTD = 1;
export const FLAG_ENCRYPTED = 2;

/** The repository's secret keys (present only in an encrypted repository). */
export interface RepositoryKeys {
  /** AES-256-GCM key for every blob. */
  encKey: Buffer;
  /** HMAC-SHA-256 key that names chunks, so that names do not reveal content. */
  idKey: Buffer;
}

export interface CodecOptions {
  keys: RepositoryKeys | null;
  compressionLevel: number;
}

/** Name of a chunk: SHA-256 of its plaintext, or HMAC-SHA-256 with the id key when encrypted. */
export function chunkId(data: Uint8Array, keys: RepositoryKeys | null): string {
  const h = keys ? createHmac('sha256', keys.idKey) : createHash('sha256');
  return h.update(data).digest('hex');
}

let zeros = Buffer.alloc(1024 * 1024);

/** True when every byte is zero (memcmp against a zero buffer: fast, allocation-free). */
export function isAllZero(data: Uint8Array): boolean {
  if (data.byteLength > zeros.length) zeros = Buffer.alloc(data.byteLength);
  return Buffer.compare(data, zeros.subarray(0, data.byteLength)) === 0;
}

export class BlobCodec {
  private readonly compressor = new Compressor();
  private readonly decompressor = new Decompressor();
  constructor(private readonly options: CodecOptions) {
    this.compressor.setParameters({ compressionLevel: options.compressionLevel });
  }

  get encrypted(): boolean {
    return this.options.keys !== null;
  }

  /** Turn plaintext into a stored blob named `name` (the name is bound into the encryption). */
  seal(name: string, data: Uint8Array): Buffer {
    let flags = 0;
    let payload: Uint8Array = data;
    if (data.byteLength > 0 && !this.looksIncompressible(data)) {
      const compressed = this.compressor.compress(data);
      if (compressed.byteLength < data.byteLength) {
        payload = compressed;
        flags |= FLAG_ZSTD;
      }
    }
    const keys = this.options.keys;
    if (!keys) {
      return Buffer.concat([header(flags), payload]);
    }
    flags |= FLAG_ENCRYPTED;
    const head = header(flags);
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', keys.encKey, nonce);
    cipher.setAAD(Buffer.concat([head, Buffer.from(name, 'utf8')]));
    const body = cipher.update(payload);
    const rest = cipher.final();
    return Buffer.concat([head, nonce, body, rest, cipher.getAuthTag()]);
  }

  /**
   * Incompressible data (media, archives, encrypted files) costs as much to try to compress as
   * text; a 64 KiB sample from the middle of a large chunk decides whether to try at all.
   */
  private looksIncompressible(data: Uint8Array): boolean {
    const SAMPLE = 64 * 1024;
    if (data.byteLength < 4 * SAMPLE) return false;
    const start = (data.byteLength >>> 1) - (SAMPLE >>> 1);
    const sample = data.subarray(start, start + SAMPLE);
    return this.compressor.compress(sample).byteLength > SAMPLE * 0.97;
  }

  /** Turn a stored blob back into plaintext; a damaged blob throws CorruptImageError naming it. */
  open(name: string, blob: Uint8Array): Buffer {
    const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
    if (buf.length < 5 || !buf.subarray(0, 3).equals(BLOB_MAGIC)) {
      throw new CorruptImageError('not a Stillpoint blob (bad magic)', { where: name, hint: 'run `stillpoint verify --deep`' });
    }
    if (buf[3] !== BLOB_VERSION) {
      throw new CorruptImageError(`blob version ${buf[3]} is not supported (expected ${BLOB_VERSION})`, { where: name });
    }
    const flags = buf[4];
    let payload: Buffer = buf.subarray(5);
    if (flags & FLAG_ENCRYPTED) {
      const keys = this.options.keys;
      if (!keys) throw new CorruptImageError('blob is encrypted but the repository was opened without keys', { where: name });
      if (payload.length < 28) throw new CorruptImageError('encrypted blob is truncated', { where: name });
      const nonce = payload.subarray(0, 12);
      const tag = payload.subarray(payload.length - 16);
      const decipher = createDecipheriv('aes-256-gcm', keys.encKey, nonce);
      decipher.setAAD(Buffer.concat([buf.subarray(0, 5), Buffer.from(name, 'utf8')]));
      decipher.setAuthTag(tag);
      try {
        payload = Buffer.concat([decipher.update(payload.subarray(12, payload.length - 16)), decipher.final()]);
      } catch (cause) {
        throw new CorruptImageError('blob fails authentication (damaged, or from another repository)', {
          where: name,
          hint: 'run `stillpoint verify --deep` to list every damaged restore point',
          cause,
        });
      }
    } else if (this.options.keys) {
      throw new CorruptImageError('blob is not encrypted in an encrypted repository', { where: name });
    }
    if (flags & FLAG_ZSTD) {
      try {
        payload = this.decompressor.decompress(payload);
      } catch (cause) {
        throw new CorruptImageError('blob does not decompress', { where: name, cause });
      }
    }
    return payload;
  }
}

function header(flags: number): Buffer {
  return Buffer.from([BLOB_MAGIC[0], BLOB_MAGIC[1], BLOB_MAGIC[2], BLOB_VERSION, flags]);
}
