import { open, type FileHandle } from 'node:fs/promises';
import type { Extent, OpenDisk } from '../contracts/reader.ts';
import { NotFoundError, StillpointError } from '../errors.ts';
import { dataExtents } from '../util/direct-io.ts';

/**
 * A raw disk image file as an `OpenDisk`: its holes are zero extents, every other byte is `data`
 * (zero chunks among them are still found by content and recorded, not stored), unless the
 * caller knows better and passes the extents.
 */
export class RawFileDisk implements OpenDisk {
  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
    readonly virtualSize: number,
    readonly logicalSectorSize: number,
    private readonly extents: Extent[] | null,
  ) {}

  static async open(path: string, options: { logicalSectorSize?: number; extents?: Extent[] } = {}): Promise<RawFileDisk> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new NotFoundError('raw disk image does not exist', { where: path, cause: error });
      throw new StillpointError(`cannot open raw disk image (${code})`, { where: path, cause: error });
    }
    const { size } = await handle.stat();
    return new RawFileDisk(handle, path, size, options.logicalSectorSize ?? 512, options.extents ?? null);
  }

  /**
   * The extents given to `open`, else the file's own: its holes (SEEK_HOLE, through
   * core/util/direct-io.ts) are zero extents and are not read; without the native library,
   * every byte is data.
   */
  async allocation(): Promise<Extent[]> {
    if (this.extents) return this.extents;
    if (this.virtualSize === 0) return [];
    const data = await dataExtents(this.path).catch(() => null);
    if (!data) return [{ offset: 0, length: this.virtualSize, kind: 'data' }];
    const out: Extent[] = [];
    let pos = 0;
    for (const d of data) {
      const start = Math.max(pos, d.offset);
      const end = Math.min(this.virtualSize, d.offset + d.length);
      if (end <= start) continue;
      if (start > pos) out.push({ offset: pos, length: start - pos, kind: 'zero' });
      out.push({ offset: start, length: end - start, kind: 'data' });
      pos = end;
    }
    if (pos < this.virtualSize) out.push({ offset: pos, length: this.virtualSize - pos, kind: 'zero' });
    return out;
  }

  async read(offset: number, target: Buffer, length = target.length, targetOffset = 0): Promise<void> {
    if (offset < 0 || offset + length > this.virtualSize) {
      throw new StillpointError(`read of ${length} bytes at ${offset} is outside the disk (${this.virtualSize} bytes)`, { where: this.path });
    }
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(target, targetOffset + done, length - done, offset + done);
      if (bytesRead === 0) throw new StillpointError(`unexpected end of file at ${offset + done}`, { where: this.path });
      done += bytesRead;
    }
  }

  async readv(offset: number, targets: Buffer[]): Promise<void> {
    const length = targets.reduce((n, b) => n + b.length, 0);
    if (offset < 0 || offset + length > this.virtualSize) {
      throw new StillpointError(`read of ${length} bytes at ${offset} is outside the disk (${this.virtualSize} bytes)`, { where: this.path });
    }
    const { bytesRead } = await this.handle.readv(targets, offset);
    if (bytesRead === length) return;
    // A short read (rare for a file): the rest buffer by buffer.
    let at = 0;
    for (const target of targets) {
      const done = Math.min(target.length, Math.max(0, bytesRead - at));
      if (done < target.length) await this.read(offset + at + done, target, target.length - done, done);
      at += target.length;
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
