/**
 * AES-256-GCM that writes where the caller says, through core/native (gcm.rs), which calls the
 * OpenSSL already in this process (the one node:crypto uses). node:crypto's `Cipher.update`
 * returns a new buffer every time; for chunk-sized data those are fresh pages the kernel must
 * clear, which on a VM cost as much as the encryption (docs/repository-performance.md). Here the
 * codec encrypts into the blob it is building and decrypts into buffers it reuses.
 *
 * `nativeGcm()` is null where the library is not built, where the process's OpenSSL does not
 * export AES-256-GCM, or with STILLPOINT_NATIVE_GCM=0: the codec then uses node:crypto. The bytes
 * are the same either way.
 */
import createDebug from 'debug';
import { ioLibrary } from './io-library.ts';
import { p } from './native.ts';

const debug = createDebug('stillpoint:native');

export interface NativeGcm {
  /**
   * Encrypt `len` bytes of `src` from `srcOffset` into `dst` at `dstOffset`, and write the 16-byte
   * tag right after them. `params` is key (32) | nonce (12) | additional data. `src` and `dst` may
   * be the same memory, also overlapping.
   */
  seal(params: Buffer, src: Uint8Array, srcOffset: number, dst: Uint8Array, dstOffset: number, len: number): void;
  /**
   * Decrypt `len` bytes of `src` from `srcOffset` (the tag right after them) into `dst` at
   * `dstOffset`. False when they do not authenticate (then `dst`'s range holds nothing usable).
   */
  open(params: Buffer, src: Uint8Array, srcOffset: number, dst: Uint8Array, dstOffset: number, len: number): boolean;
}

let loaded: NativeGcm | null | undefined;

/** The native AES-256-GCM of this thread, or null (see the module's comment). */
export function nativeGcm(): NativeGcm | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  if (process.env.STILLPOINT_NATIVE_GCM === '0' || !ioLibrary.available()) return loaded;
  if (ioLibrary.callNow('gcm_available', [], 'AES-256-GCM') !== 1) {
    debug("this process's OpenSSL does not export AES-256-GCM: node:crypto encrypts");
    return loaded;
  }
  const call = (fn: string, params: Buffer, src: Uint8Array, srcOffset: number, dst: Uint8Array, dstOffset: number, len: number): void => {
    ioLibrary.callNow(fn, [p.buf(params), p.i64(params.length), p.buf(src), p.i64(src.byteLength), p.i64(srcOffset), p.buf(dst), p.i64(dst.byteLength), p.i64(dstOffset), p.i64(len)], 'AES-256-GCM');
  };
  loaded = {
    seal(params, src, srcOffset, dst, dstOffset, len) {
      call('gcm_seal', params, src, srcOffset, dst, dstOffset, len);
    },
    open(params, src, srcOffset, dst, dstOffset, len) {
      try {
        call('gcm_open', params, src, srcOffset, dst, dstOffset, len);
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EBADMSG') return false;
        throw error;
      }
    },
  };
  return loaded;
}

