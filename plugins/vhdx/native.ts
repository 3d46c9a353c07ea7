/**
 * The native VHDX library (plugins/vhdx/native, Rust, C ABI) through core/util/native.ts: calls
 * are promises that run on libuv's thread pool, so reads never block the event loop; buffers are
 * passed as pointers, so the library reads straight into the caller's memory.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CorruptImageError, NotFoundError, StillpointError } from '../../core/errors.ts';
import { NativeLibrary, p, type NativeParam } from '../../core/util/native.ts';

const here = dirname(fileURLToPath(import.meta.url));
const LIB = 'stillpoint_vhdx';
const ERR_LEN = 4096;

/** A differencing disk's parent is not the disk it was made from (DataWriteGuid ≠ parent_linkage). */
export class VhdxLinkageError extends StillpointError {}
/** The file is opened for writing by another handle. */
export class VhdxBusyError extends StillpointError {}

function libraryPath(): string {
  const override = process.env.STILLPOINT_VHDX_LIB;
  if (override) {
    if (existsSync(override)) return override;
    throw new StillpointError('the native VHDX library named by STILLPOINT_VHDX_LIB does not exist', {
      where: override,
      hint: 'unset STILLPOINT_VHDX_LIB or run `npm run build:native`',
    });
  }
  const candidates = [
    join(here, 'native', 'lib', 'libstillpoint_vhdx.so'),
    join(here, 'native', 'target', 'release', 'libstillpoint_vhdx.so'),
    join(here, 'native', 'target', 'release', 'libstillpoint_vhdx.dylib'),
    join(here, 'native', 'target', 'release', 'stillpoint_vhdx.dll'),
  ].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new StillpointError('the native VHDX library is not built', {
      where: candidates.slice(0, 2).join(' or '),
      hint: 'run `npm run build:native` (needs cargo) and try again',
    });
  }
  return found;
}

/** Maps a negative return code and its message to the error that says what to do. */
function toError(code: number, message: string, whereArg: string): Error {
  const msg = message || `native VHDX call failed with code ${code}`;
  const where = msg.includes(whereArg) ? undefined : whereArg;
  switch (-code) {
    case 2: return new CorruptImageError(msg, { where, hint: 'the image is damaged or not a VHDX; check it with `stillpoint vhdx info`' });
    case 3: return new NotFoundError(msg, { where });
    case 4: return new VhdxLinkageError(msg, { where });
    case 5: return new StillpointError(msg, { where });
    case 6: return new CorruptImageError(msg, { where, hint: 'the image uses a VHDX feature this library does not support' });
    case 8: return new VhdxBusyError(msg, { where });
    case 7: return new StillpointError(msg, { where, hint: 'this is a bug in the VHDX library; please report it with the image if possible' });
    default: return new StillpointError(msg, { where });
  }
}

const library = new NativeLibrary({ name: LIB, locate: libraryPath, toError, errLen: ERR_LEN });

/** Calls `fn` on libuv's thread pool. */
export const call = (fn: string, params: NativeParam[], where: string): Promise<number> => library.call(fn, params, where);

/** Calls a function that fills an output buffer and returns the size it needs; grows and retries. */
export const callGrowing = (fn: string, params: NativeParam[], where: string, unit?: number, initial?: number): Promise<{ out: Buffer; n: number }> =>
  library.callGrowing(fn, params, where, unit, initial);

export { p };
