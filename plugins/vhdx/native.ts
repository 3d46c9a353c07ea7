/**
 * Loads the native VHDX library (plugins/vhdx/native, Rust, C ABI) with ffi-rs and exposes its
 * calls as promises that run on libuv's thread pool (`runInNewThread`), so reads never block the
 * event loop. Buffers are passed as pointers (DataType.U8Array): the library reads straight into
 * the caller's memory, no copy.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import createDebug from 'debug';
import { DataType, load, open } from 'ffi-rs';
import { CorruptImageError, NotFoundError, StillpointError } from '../../core/errors.ts';

const debug = createDebug('stillpoint:vhdx');
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

let loaded = false;
function ensureLoaded(): void {
  if (loaded) return;
  const path = libraryPath();
  open({ library: LIB, path });
  debug('loaded %s', path);
  loaded = true;
}

type Param = { type: DataType; value: unknown };
const str = (value: string): Param => ({ type: DataType.String, value });
const i64 = (value: number): Param => ({ type: DataType.I64, value });
const i32 = (value: number): Param => ({ type: DataType.I32, value });
const buf = (value: Buffer): Param => ({ type: DataType.U8Array, value });

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

/** Calls `fn` on a worker thread; the last two arguments are the error buffer and its length. */
export async function call(fn: string, params: Param[], where: string): Promise<number> {
  ensureLoaded();
  const err = Buffer.alloc(ERR_LEN);
  const all = [...params, buf(err), i64(ERR_LEN)];
  const r = (await load({
    library: LIB,
    funcName: `stillpoint_vhdx_${fn}`,
    retType: DataType.I64,
    paramsType: all.map((p) => p.type),
    paramsValue: all.map((p) => p.value),
    runInNewThread: true,
  })) as number;
  if (r < 0) {
    const end = err.indexOf(0);
    throw toError(r, err.subarray(0, end < 0 ? err.length : end).toString('utf8'), where);
  }
  return r;
}

/** Same as `call` but on the calling thread (used only where a result is needed synchronously). */
export function callSync(fn: string, params: Param[], where: string): number {
  ensureLoaded();
  const err = Buffer.alloc(ERR_LEN);
  const all = [...params, buf(err), i64(ERR_LEN)];
  const r = load({
    library: LIB,
    funcName: `stillpoint_vhdx_${fn}`,
    retType: DataType.I64,
    paramsType: all.map((p) => p.type),
    paramsValue: all.map((p) => p.value),
  }) as number;
  if (r < 0) {
    const end = err.indexOf(0);
    throw toError(r, err.subarray(0, end < 0 ? err.length : end).toString('utf8'), where);
  }
  return r;
}

/** Calls a function that fills an output buffer and returns the size it needs; grows and retries. */
export async function callGrowing(fn: string, params: Param[], where: string, unit = 1, initial = 64 * 1024): Promise<{ out: Buffer; n: number }> {
  let size = initial;
  for (;;) {
    const out = Buffer.alloc(size);
    const n = await call(fn, [...params, buf(out), i64(out.length)], where);
    if (n * unit <= out.length) return { out, n };
    size = n * unit;
  }
}

export const p = { str, i64, i32, buf };
