import { open, type FileHandle } from 'node:fs/promises';
import type { Extent, OpenDisk } from '../contracts/reader.ts';
import { NotFoundError, StillpointError } from '../errors.ts';

/**
 * A raw disk image file as an `OpenDisk`: every byte is `data` (zero chunks are still found by
 * content and recorded, not stored), unless the caller knows better and passes the extents.
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

  async allocation(): Promise<Extent[]> {
    return this.extents ?? (this.virtualSize > 0 ? [{ offset: 0, length: this.virtualSize, kind: 'data' }] : []);
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

  async close(): Promise<void> {
    await this.handle.close();
  }
}
