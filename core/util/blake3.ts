/**
 * BLAKE3 through core/native (blake3.rs): the official C implementation, with its assembly for
 * SSE2 to AVX-512 (chosen at run time) or NEON, compiled into the native library by its build.
 * Stillpoint names chunks with it (`chunkHash` "blake3" and "blake3-keyed"): 3-4 times the speed
 * of SHA-256 even with the CPU's SHA extensions.
 *
 * `nativeBlake3()` is null where the library is not built; a repository whose chunks are named
 * with BLAKE3 then cannot be used (codec.ts says so), and a new one is named with SHA-256.
 */
import { ioLibrary } from './io-library.ts';
import { p } from './native.ts';

export const BLAKE3_OUT_LEN = 32;

/** BLAKE3 of `data` into `out` (32 bytes), keyed with `key` (32 bytes) or plain (null). */
export type Blake3 = (key: Buffer | null, data: Uint8Array, out: Buffer) => void;

let loaded: Blake3 | null | undefined;

/** BLAKE3 of this thread, or null when the native library is not built. */
export function nativeBlake3(): Blake3 | null {
  if (loaded !== undefined) return loaded;
  if (!ioLibrary.available()) return (loaded = null);
  const noKey = Buffer.alloc(0);
  loaded = (key, data, out) => {
    const k = key ?? noKey;
    ioLibrary.callNow('blake3', [p.buf(k), p.i64(k.length), p.buf(data), p.i64(data.byteLength), p.i64(0), p.i64(data.byteLength), p.buf(out), p.i64(out.length)], 'BLAKE3');
  };
  return loaded;
}
