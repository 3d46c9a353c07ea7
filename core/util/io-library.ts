/**
 * core/native's library (libstillpoint_io: direct-I/O writes, a file's extents, AES-256-GCM into
 * the caller's buffers, BLAKE3), loaded once per thread through ffi-rs on first use. Absent when it
 * is not built: direct-io.ts and gcm.ts then fall back to node's own means, and new repositories
 * name chunks with SHA-256 (blake3.ts).
 */
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeLibrary } from './native.ts';

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

export const ioLibrary = new NativeLibrary({
  name: 'stillpoint_io',
  locate: libraryPath,
  // Like node:fs errors: the OS's code (ENOSPC, EIO, EACCES...) and the path.
  toError(code, message, path) {
    const error = new Error(`${message} (${path})`) as NodeJS.ErrnoException;
    error.code = errnoNames.get(-code) ?? `E${-code}`;
    error.errno = code;
    error.path = path;
    return error;
  },
  errLen: 1024,
});

/** core/native's build output, looked for upwards from this module (in the sources, or in a bundle under the project). */
function libraryPath(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'core', 'native', 'target', 'release', 'libstillpoint_io.so');
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return null;
}

