/**
 * Stillpoint's native libraries (Rust, C ABI: core/native, plugins/vhdx/native) as seen from
 * TypeScript, through ffi-rs. Every exported function takes an error buffer and its length as its
 * last two arguments and returns an i64: >= 0 on success (a handle, a count or a size), or a
 * negative code with a NUL-terminated message in the buffer. Calls run on libuv's thread pool
 * (`runInNewThread`) so that I/O never blocks the event loop; buffers are passed as pointers
 * (DataType.U8Array): the library reads and writes the caller's memory, no copy.
 */
import createDebug from 'debug';
import { DataType, load, open } from 'ffi-rs';
import { StillpointError } from '../errors.ts';

const debug = createDebug('stillpoint:native');

export type NativeParam = { type: DataType; value: unknown };

/** Parameter constructors. */
export const p = {
  str: (value: string): NativeParam => ({ type: DataType.String, value }),
  i64: (value: number): NativeParam => ({ type: DataType.I64, value }),
  i32: (value: number): NativeParam => ({ type: DataType.I32, value }),
  /** Any view of bytes: the library gets a pointer to exactly its range (a Buffer view, no copy). */
  buf: (value: Uint8Array): NativeParam => ({ type: DataType.U8Array, value: Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength) }),
};

export interface NativeLibraryOptions {
  /** ffi-rs's name for the library; exported functions are called `<name>_<fn>`. */
  name: string;
  /** Where the built library is: a path, null when it is not there (or throws saying what to do). */
  locate(): string | null;
  /** The error for a negative return `code` with the library's `message`, for a call about `where`. */
  toError(code: number, message: string, where: string): Error;
  /** Size of the error buffer. */
  errLen?: number;
}

export class NativeLibrary {
  private state: 'unloaded' | 'loaded' | 'missing' = 'unloaded';

  constructor(private readonly options: NativeLibraryOptions) {}

  /** Whether the library is there (loaded on first use); `locate` may throw instead of saying no. */
  available(): boolean {
    if (this.state === 'unloaded') {
      const path = this.options.locate();
      if (path === null) {
        debug('%s is not built', this.options.name);
        this.state = 'missing';
      } else {
        open({ library: this.options.name, path });
        debug('loaded %s', path);
        this.state = 'loaded';
      }
    }
    return this.state === 'loaded';
  }

  /** Call `<name>_<fn>` on the thread pool. */
  async call(fn: string, params: NativeParam[], where: string): Promise<number> {
    const err = this.errorBuffer();
    return this.result((await this.load(fn, params, err, true)) as number, err, where);
  }

  /** Call `<name>_<fn>` on this thread: only for functions that return at once (no I/O). */
  callNow(fn: string, params: NativeParam[], where: string): number {
    const err = this.errorBuffer();
    return this.result(this.load(fn, params, err, false) as number, err, where);
  }

  private errorBuffer(): Buffer {
    if (!this.available()) throw new StillpointError(`the native library ${this.options.name} is not built`, { hint: 'run `npm run build:native` (needs cargo)' });
    return Buffer.alloc(this.options.errLen ?? 4096);
  }

  private load(fn: string, params: NativeParam[], err: Buffer, runInNewThread: boolean): unknown {
    const all = [...params, p.buf(err), p.i64(err.length)];
    return load({
      library: this.options.name,
      funcName: `${this.options.name}_${fn}`,
      retType: DataType.I64,
      paramsType: all.map((x) => x.type),
      paramsValue: all.map((x) => x.value),
      runInNewThread,
    });
  }

  private result(r: number, err: Buffer, where: string): number {
    if (r >= 0) return r;
    const end = err.indexOf(0);
    throw this.options.toError(r, err.subarray(0, end < 0 ? err.length : end).toString('utf8'), where);
  }

  /**
   * Call a function that fills an output buffer (the last parameters before the error buffer)
   * and returns how many `unit`-byte items it needs; grows the buffer and calls again until they fit.
   */
  async callGrowing(fn: string, params: NativeParam[], where: string, unit = 1, initial = 64 * 1024): Promise<{ out: Buffer; n: number }> {
    for (let size = initial; ; ) {
      const out = Buffer.alloc(size);
      const n = await this.call(fn, [...params, p.buf(out), p.i64(out.length)], where);
      if (n * unit <= out.length) return { out, n };
      size = n * unit;
    }
  }
}
