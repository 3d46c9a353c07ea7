import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
// The binding is zstd-napi's documented low-level API (binding.d.ts).
import zstd from 'zstd-napi/binding.js';
import { CorruptImageError, StillpointError } from '../errors.ts';
import { nativeBlake3, BLAKE3_OUT_LEN } from '../util/blake3.ts';
import { nativeGcm, type NativeGcm } from '../util/gcm.ts';
import type { ChunkHash } from './format.ts';

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
  /** Key of the keyed hash that names chunks (`chunkHash`), so that names do not reveal content. */
  idKey: Buffer;
}

export interface CodecOptions {
  keys: RepositoryKeys | null;
  compressionLevel: number;
  /** false: AES-GCM through node:crypto even where the native library has it (util/gcm.ts); the blobs are the same. */
  nativeCrypto?: boolean;
}

/** Whether `hash` takes the id key: the one an encrypted repository must use. */
export function isKeyedChunkHash(hash: ChunkHash): boolean {
  return hash === 'blake3-keyed' || hash === 'hmac-sha256';
}

/** Names a chunk: the hex hash of its plaintext, as the repository's `chunkHash` says (format.ts). */
export type ChunkNamer = (data: Uint8Array) => string;

/** The namer for `hash`; a keyed hash needs the repository's keys. */
export function chunkNamer(hash: ChunkHash, keys: RepositoryKeys | null): ChunkNamer {
  if (isKeyedChunkHash(hash) && !keys) throw new StillpointError(`chunk hash ${hash} needs the repository's keys`);
  switch (hash) {
    case 'blake3':
    case 'blake3-keyed': {
      const blake3 = nativeBlake3();
      if (!blake3) {
        throw new StillpointError(`chunks here are named with BLAKE3 (${hash}), which needs the native library: it is not built`, { hint: 'run `npm run build:native` (needs cargo and a C compiler)' });
      }
      const key = hash === 'blake3-keyed' ? keys!.idKey : null;
      const out = Buffer.alloc(BLAKE3_OUT_LEN);
      return (data) => {
        blake3(key, data, out);
        return out.toString('hex');
      };
    }
    case 'sha256':
      return (data) => createHash('sha256').update(data).digest('hex');
    case 'hmac-sha256':
      return (data) => createHmac('sha256', keys!.idKey).update(data).digest('hex');
  }
}

let zeros = Buffer.alloc(1024 * 1024);

/** True when every byte is zero (memcmp against a zero buffer: fast, allocation-free). */
export function isAllZero(data: Uint8Array): boolean {
  if (data.byteLength > zeros.length) zeros = Buffer.alloc(data.byteLength);
  return Buffer.compare(data, zeros.subarray(0, data.byteLength)) === 0;
}

/** Bytes a sealed blob may have beyond its plaintext: header 5 + nonce 12 + tag 16 (+ room). */
export const SEAL_OVERHEAD = 64;
/** No blob holds more than this (chunks are at most a few MiB, tables a few hundred). */
const MAX_PLAINTEXT = 2 ** 30;

export class BlobCodec {
  // The low-level binding: compress into and decompress into buffers we own and reuse, instead of
  // a fresh allocation per chunk (each one costs page faults and garbage collection).
  private readonly cctx = new zstd.CCtx();
  private readonly dctx = new zstd.DCtx();
  /** AES-256-GCM into buffers of ours where the native library has it (see util/gcm.ts). */
  private readonly gcm: NativeGcm | null;
  private scratch = Buffer.alloc(0);
  private openScratch = Buffer.alloc(0);
  /** Whether the last chunk sealed did not compress (see `looksIncompressible`). */
  private lastIncompressible = false;
  constructor(private readonly options: CodecOptions) {
    this.gcm = options.keys && options.nativeCrypto !== false ? nativeGcm() : null;
    this.cctx.setParameter(zstd.CParameter.compressionLevel, options.compressionLevel);
    if (options.compressionLevel === 1) {
      // Level 1, the default, is tuned for disk images: matches of at least 7 bytes and a 2^13
      // hash table make zstd 11–13% faster on VM disk data for 3.5% more output
      // (docs/repository-performance.md). The frames are ordinary zstd frames either way.
      this.cctx.setParameter(zstd.CParameter.minMatch, 7);
      this.cctx.setParameter(zstd.CParameter.hashLog, 13);
    }
  }

  get encrypted(): boolean {
    return this.options.keys !== null;
  }

  /**
   * Turn plaintext into a stored blob named `name` (the name is bound into the encryption).
   * With `into` (at least `data.length + SEAL_OVERHEAD` bytes, and it may be the buffer `data`
   * lies in), the blob is written there and the result is a view of it.
   */
  seal(name: string, data: Uint8Array, into?: Uint8Array): Buffer {
    let flags = 0;
    let payload: Uint8Array = data;
    if (data.byteLength > 0 && !this.looksIncompressible(data)) {
      const scratch = this.scratchFor(data.byteLength);
      const n = this.cctx.compress2(scratch, data);
      this.lastIncompressible = n > data.byteLength * 0.97;
      if (n < data.byteLength) {
        payload = scratch.subarray(0, n);
        flags |= FLAG_ZSTD;
      }
    }
    const keys = this.options.keys;
    const out = into && into.byteLength >= data.byteLength + SEAL_OVERHEAD
      ? Buffer.from(into.buffer, into.byteOffset, into.byteLength)
      : Buffer.allocUnsafe(payload.byteLength + SEAL_OVERHEAD);
    if (!keys) {
      // Move first (payload may lie in `out`, just after where the header goes), then the header.
      out.set(payload, 5);
      writeHeader(out, flags);
      return out.subarray(0, 5 + payload.byteLength);
    }
    flags |= FLAG_ENCRYPTED;
    const nonce = randomBytes(12);
    const gcm = this.gcm;
    if (gcm) {
      // Encrypted straight into `out` (the payload may lie there too), the tag after it; the
      // header last, since it may overwrite the start of a payload that lay at `out`'s start.
      gcm.seal(gcmParams(keys.encKey, nonce, flags, name), payload, 0, out, 17, payload.byteLength);
      writeHeader(out, flags);
      nonce.copy(out, 5);
      return out.subarray(0, 17 + payload.byteLength + 16);
    }
    const cipher = createCipheriv('aes-256-gcm', keys.encKey, nonce);
    const head = writeHeader(Buffer.allocUnsafe(5), flags);
    cipher.setAAD(Buffer.concat([head, Buffer.from(name, 'utf8')]));
    // Encrypted into a new buffer first: the payload may lie in `out`.
    const body = cipher.update(payload);
    cipher.final();
    head.copy(out, 0);
    nonce.copy(out, 5);
    body.copy(out, 17);
    cipher.getAuthTag().copy(out, 17 + body.length);
    return out.subarray(0, 17 + body.length + 16);
  }

  /**
   * Whether to skip compressing `data`. Incompressible data (media, archives, encrypted files)
   * comes in long runs, like text does, so the last chunk predicts the next: after a chunk that
   * did not compress, a 64 KiB sample from the middle decides; otherwise the chunk is compressed
   * whole (trying costs less than sampling every chunk would).
   */
  private looksIncompressible(data: Uint8Array): boolean {
    const SAMPLE = 64 * 1024;
    if (!this.lastIncompressible || data.byteLength < 4 * SAMPLE) return false;
    const start = (data.byteLength >>> 1) - (SAMPLE >>> 1);
    const incompressible = this.cctx.compress2(this.scratchFor(data.byteLength), data.subarray(start, start + SAMPLE)) > SAMPLE * 0.97;
    this.lastIncompressible = incompressible;
    return incompressible;
  }

  /**
   * The plaintext payload of encrypted blob `buf` (header, nonce, ciphertext, tag): compressed data
   * into a reused buffer (it is decompressed next), other data into `into` when it fits.
   */
  private decrypt(name: string, keys: RepositoryKeys, buf: Buffer, flags: number, into?: Uint8Array): Buffer {
    const nonce = buf.subarray(5, 17);
    const length = buf.length - 33;
    const gcm = this.gcm;
    if (gcm) {
      const target = flags & FLAG_ZSTD ? this.openScratchFor(length) : into && length <= into.byteLength ? Buffer.from(into.buffer, into.byteOffset, into.byteLength) : Buffer.allocUnsafe(length);
      if (!gcm.open(gcmParams(keys.encKey, nonce, flags, name), buf, 17, target, 0, length)) throw authenticationFailed(name);
      return target.subarray(0, length);
    }
    const decipher = createDecipheriv('aes-256-gcm', keys.encKey, nonce);
    decipher.setAAD(Buffer.concat([buf.subarray(0, 5), Buffer.from(name, 'utf8')]));
    decipher.setAuthTag(buf.subarray(buf.length - 16));
    try {
      const plain = decipher.update(buf.subarray(17, buf.length - 16));
      const rest = decipher.final(); // empty for GCM; throws when the tag does not match
      return rest.length ? Buffer.concat([plain, rest]) : plain;
    } catch (cause) {
      throw authenticationFailed(name, cause);
    }
  }

  /** The reused buffer that compressed data is decrypted into before it is decompressed. */
  private openScratchFor(bytes: number): Buffer {
    if (this.openScratch.length < bytes) this.openScratch = Buffer.allocUnsafe(bytes);
    return this.openScratch;
  }

  /** The reused output buffer, with room for compressing `bytes` bytes. */
  private scratchFor(bytes: number): Buffer {
    const bound = zstd.compressBound(bytes);
    if (this.scratch.length < bound) this.scratch = Buffer.allocUnsafe(bound);
    return this.scratch;
  }

  /**
   * Turn a stored blob back into plaintext; a damaged blob throws CorruptImageError naming it.
   * With `into`, plaintext that fits is written there and the result is a view of it.
   */
  open(name: string, blob: Uint8Array, into?: Uint8Array): Buffer {
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
      payload = this.decrypt(name, keys, buf, flags, into);
    } else if (this.options.keys) {
      throw new CorruptImageError('blob is not encrypted in an encrypted repository', { where: name });
    }
    if (flags & FLAG_ZSTD) {
      try {
        const size = zstd.getFrameContentSize(payload);
        if (size !== null && size > MAX_PLAINTEXT) throw new Error(`the frame says it holds ${size} bytes`);
        if (into && size !== null && size <= into.byteLength) {
          const target = Buffer.from(into.buffer, into.byteOffset, into.byteLength);
          const n = this.dctx.decompress(target, payload);
          return target.subarray(0, n);
        }
        const out = Buffer.allocUnsafe(size ?? 0);
        const n = size === null ? -1 : this.dctx.decompress(out, payload);
        if (n < 0) throw new Error('the frame does not state its size');
        return out.subarray(0, n);
      } catch (cause) {
        throw new CorruptImageError('blob does not decompress', { where: name, cause });
      }
    }
    if (into && payload.buffer === into.buffer && payload.byteOffset === into.byteOffset) return payload;
    if (into && payload.length <= into.byteLength) {
      const target = Buffer.from(into.buffer, into.byteOffset, into.byteLength);
      payload.copy(target, 0);
      return target.subarray(0, payload.length);
    }
    return payload;
  }
}

/** What native AES-256-GCM takes: key | nonce | additional data (the blob's header and its name). */
function gcmParams(key: Buffer, nonce: Uint8Array, flags: number, name: string): Buffer {
  const params = Buffer.allocUnsafe(32 + 12 + 5 + Buffer.byteLength(name, 'utf8'));
  key.copy(params, 0);
  params.set(nonce, 32);
  writeHeader(params.subarray(44, 49), flags);
  params.write(name, 49, 'utf8');
  return params;
}

function authenticationFailed(name: string, cause?: unknown): CorruptImageError {
  return new CorruptImageError('blob fails authentication (damaged, or from another repository)', {
    where: name,
    hint: 'run `stillpoint verify --deep` to list every damaged restore point',
    cause,
  });
}

function writeHeader(out: Buffer, flags: number): Buffer {
  BLOB_MAGIC.copy(out, 0);
  out[3] = BLOB_VERSION;
  out[4] = flags;
  return out;
}
