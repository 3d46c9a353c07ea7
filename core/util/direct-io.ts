/**
 * Large sequential writes around the page cache (O_DIRECT), and a file's holes, through
 * the native library in core/native (Rust, C ABI; calls through core/util/native.ts run on
 * libuv's thread pool).
 *
 * Pack files and restored disks are written once and not read back soon: copying them into page
 * cache pages costs the kernel as much CPU as hashing them, and once the cache holds gigabytes of
 * dirty pages the writer is throttled. Direct writes cost neither. `openDirectFile` returns null
 * when the native library is not built (or STILLPOINT_DIRECT_IO=0): callers then write through
 * node:fs as before. Errors carry the OS's `code` (ENOSPC, EIO, EACCES…) like node:fs errors.
 */
import createDebug from 'debug';
import { ioLibrary as library } from './io-library.ts';
import { p } from './native.ts';

const debug = createDebug('stillpoint:io');
const CREATE_NEW = 1;
const TRUNCATE = 2;

let saidMissing = false;

/** Direct I/O is used where the library is built, unless STILLPOINT_DIRECT_IO=0. */
function directIo(): boolean {
  if (process.env.STILLPOINT_DIRECT_IO === '0') return false;
  if (library.available()) return true;
  if (!saidMissing) debug('direct I/O library not built (core/native/target/release): ordinary writes');
  saidMissing = true;
  return false;
}

/**
 * The data extents of a file (SEEK_DATA / SEEK_HOLE): between them are holes, which read as
 * zeros. One extent over the whole file where the filesystem keeps no holes; null when the
 * native library is not available.
 */
export async function dataExtents(path: string): Promise<Array<{ offset: number; length: number }> | null> {
  if (!directIo()) return null;
  const { out, n } = await library.callGrowing('extents', [p.str(path)], path, 16, 256 * 16);
  const extents = [];
  for (let i = 0; i < n; i++) extents.push({ offset: Number(out.readBigInt64LE(i * 16)), length: Number(out.readBigInt64LE(i * 16 + 8)) });
  return extents;
}

/** Alignment of memory, offsets and lengths that direct writes take without a copy. */
export const DIRECT_ALIGN = 4096;

/**
 * A buffer of `size` bytes whose memory starts on a page boundary where direct I/O is available:
 * written with `DirectFile.write` at an aligned offset, it goes to the device without the copy into
 * the library's aligned scratch memory. (Large buffers only: it costs a page more.)
 */
export function allocAligned(size: number): Buffer {
  if (!directIo()) return Buffer.allocUnsafe(size);
  const raw = Buffer.allocUnsafeSlow(size + DIRECT_ALIGN);
  const skip = bytesToPage(raw)!;
  return raw.subarray(skip, skip + size);
}

/** How many bytes from `buf`'s start the next page boundary is (0: aligned); null without the library. */
export function bytesToPage(buf: Buffer): number | null {
  if (!directIo() || buf.length === 0) return null;
  return library.callNow('align_offset', [p.buf(buf), p.i64(buf.length)], 'a buffer');
}

export interface DirectFile {
  /** True while writes go around the page cache (false where the filesystem refuses O_DIRECT). */
  readonly direct: boolean;
  /** Write all of `data` at `offset` (offsets that are multiples of 4 KiB go around the cache). */
  write(offset: number, data: Buffer): Promise<void>;
  truncate(length: number): Promise<void>;
  /** fsync. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Open `path` for direct writes: `exclusive` creates it and fails if it exists (like 'wx'),
 * otherwise it is created or truncated (like 'w'). Null when direct I/O is not available here.
 */
export async function openDirectFile(path: string, options: { exclusive?: boolean; mode?: number } = {}): Promise<DirectFile | null> {
  if (!directIo()) return null;
  const h = await library.call('open', [p.str(path), p.i32(options.exclusive ? CREATE_NEW : TRUNCATE), p.i32(options.mode ?? 0o600)], path);
  const direct = (await library.call('is_direct', [p.i64(h)], path)) === 1;
  let closed = false;
  return {
    direct,
    async write(offset, data) {
      await library.call('write', [p.i64(h), p.i64(offset), p.buf(data), p.i64(data.length), p.i64(0), p.i64(data.length)], path);
    },
    async truncate(length) {
      await library.call('set_len', [p.i64(h), p.i64(length)], path);
    },
    async sync() {
      await library.call('sync', [p.i64(h)], path);
    },
    async close() {
      if (closed) return;
      closed = true;
      await library.call('close', [p.i64(h)], path);
    },
  };
}

/**
 * Sequential writes gathered into runs of up to `runBytes` before they reach a `DirectFile`: a
 * direct write costs a device request and a thread-pool hop, so 256 KiB chunks written one by one
 * run at a third of the speed of 4 MiB runs. `write` copies the bytes (the caller may reuse its
 * buffer at once) and waits only when every run buffer is being written.
 *
 * A run is not held back while the file has nothing to do: once no write is in flight, a run of
 * `idleBytes` or more goes out at once (so a restore's first write does not wait for 8 MiB to be
 * decoded, and the device is not left idle while a run fills more slowly than it writes). While a
 * write is in flight, runs grow to `runBytes`.
 */
export class RunWriter {
  private readonly spare: Buffer[];
  private readonly idleBytes: number;
  private run: Buffer | null = null;
  private runStart = 0;
  private runLength = 0;
  private readonly writing = new Set<Promise<void>>();
  private failure: unknown = null;

  constructor(
    private readonly file: DirectFile,
    options: { runBytes?: number; buffers?: number; idleBytes?: number } = {},
  ) {
    const runBytes = options.runBytes ?? 8 * 2 ** 20;
    this.idleBytes = options.idleBytes ?? runBytes / 8;
    this.spare = Array.from({ length: options.buffers ?? 2 }, () => allocAligned(runBytes));
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.check();
    let at = 0;
    while (at < data.length) {
      if (this.run && (offset + at !== this.runStart + this.runLength || this.runLength === this.run.length)) this.flush();
      if (!this.run) {
        while (this.spare.length === 0) await Promise.race(this.writing);
        this.check();
        this.run = this.spare.pop()!;
        this.runStart = offset + at;
        this.runLength = 0;
      }
      const n = Math.min(data.length - at, this.run.length - this.runLength);
      data.copy(this.run, this.runLength, at, at + n);
      this.runLength += n;
      at += n;
    }
    this.flushIfIdle();
  }

  /** Write out what is gathered and wait for every write; rethrows the first failure. */
  async drain(): Promise<void> {
    if (this.run && this.runLength > 0) this.flush();
    await Promise.all(this.writing);
    this.check();
  }

  private flush(): void {
    const run = this.run!;
    const p = this.file.write(this.runStart, run.subarray(0, this.runLength)).then(
      () => {
        this.writing.delete(p);
        this.spare.push(run);
        this.flushIfIdle();
      },
      (error) => {
        this.writing.delete(p);
        this.failure ??= error;
      },
    );
    this.writing.add(p);
    this.run = null;
  }

  /** Write the run out now if nothing is being written and it holds `idleBytes` or more. */
  private flushIfIdle(): void {
    if (this.writing.size === 0 && this.run && this.runLength >= this.idleBytes && !this.failure) this.flush();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
