/** An extent of a virtual disk: `data` is defined in some layer, `zero` reads zeros and need not be read. */
export interface Extent {
  offset: number;
  length: number;
  kind: 'data' | 'zero';
}

export interface OpenDisk {
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  /** Extents covering [0, virtualSize) in order, without gaps. */
  allocation(): Promise<Extent[]>;
  /** Read `length` bytes at `offset` into `target` (at `targetOffset`); never blocks the event loop. */
  read(offset: number, target: Buffer, length?: number, targetOffset?: number): Promise<void>;
  /**
   * Optional: read consecutive bytes at `offset` into `targets`, filling each whole, in order (one
   * call for several chunks: a backup reads neighbouring chunks of a data extent with it).
   */
  readv?(offset: number, targets: Buffer[]): Promise<void>;
  close(): Promise<void>;
}

/** A disk reader for one disk format (VHDX through the native library). */
export interface DiskReader {
  readonly name: string;
  canOpen(path: string): boolean;
  /** Open a chain by its top file; `parentPaths` overrides the parent locator, top first below `path`. */
  open(path: string, options?: { parentPaths?: string[] }): Promise<OpenDisk>;
}
