/** The VHDX API: create, open (a chain), read, write, flush, allocation map, info, merge. */
import { resolve } from 'node:path';
import type { Extent, OpenDisk } from '../../core/contracts/reader.ts';
import { StillpointError } from '../../core/errors.ts';
import { call, callGrowing, p } from './native.ts';

export interface VhdxCreateOptions {
  virtualSize: number;
  /** Payload block size in bytes, a power of two from 1 MiB to 256 MiB. Default 32 MiB (2 MiB for differencing disks). */
  blockSize?: number;
  logicalSectorSize?: 512 | 4096;
  physicalSectorSize?: 512 | 4096;
}

export interface VhdxOpenOptions {
  /** Opens the top layer read-write (takes an advisory exclusive lock on it). */
  writable?: boolean;
  /** Explicit chain below `path`, top first; overrides the parent locators. */
  parentPaths?: string[];
  /** Accept a parent whose DataWriteGuid does not match the child's parent_linkage. */
  force?: boolean;
  /** Open this file alone, without resolving its parents (parent data reads as zeros). Used by `vhdx info`. */
  alone?: boolean;
}

export interface VhdxHeaderInfo {
  slot: 1 | 2;
  valid: boolean;
  current: boolean;
  error?: string;
  sequenceNumber?: number;
  fileWriteGuid?: string;
  dataWriteGuid?: string;
  logGuid?: string;
  logVersion?: number;
  version?: number;
  logOffset?: number;
  logLength?: number;
  checksum?: number;
}

export interface VhdxLayerInfo {
  path: string;
  type: 'fixed' | 'dynamic' | 'differencing';
  fileSize: number;
  headers: VhdxHeaderInfo[];
  currentHeader: 1 | 2;
  activeHeader: { sequenceNumber: number; dataWriteGuid: string; fileWriteGuid: string; logGuid: string };
  regionTableUsed: 1 | 2;
  regionTableErrors: string[];
  regions: { guid: string; name: string; offset: number; length: number; required: boolean }[];
  metadata: {
    blockSize: number; virtualSize: number; logicalSectorSize: number; physicalSectorSize: number;
    virtualDiskId: string; leaveBlockAllocated: boolean; hasParent: boolean;
    items: { item: string; offset: number; length: number; isUser: boolean; isVirtualDisk: boolean; isRequired: boolean }[];
  };
  parentLocator: { type: string; entries: Record<string, string> } | null;
  bat: {
    chunkRatio: number; entries: number; payloadBlocks: number; sectorBitmapBlocks: number;
    /** Count of payload blocks by state name (NOT_PRESENT, ZERO, FULLY_PRESENT, PARTIALLY_PRESENT, ...). */
    payloadStates: Record<string, number>;
    sectorBitmapStates: Record<string, number>;
  };
  log: { replayed: boolean; staleEntries?: number; inMemory?: boolean; entriesReplayed?: number; writes?: number; validEntriesSeen?: number; otherGuidEntries?: number; lastFileOffset?: number; flushedFileOffset?: number };
}

export interface VhdxLinkInfo {
  child: string;
  parent: string;
  /** explicit, relative_path, absolute_win32_path, volume_path, or "... (file name next to the child)". */
  foundBy: string;
  parentLinkage: string | null;
  parentLinkage2: string | null;
  parentDataWriteGuid: string;
  ok: boolean;
  forced: boolean;
  tried: string[];
}

export interface VhdxInfo {
  virtualSize: number;
  logicalSectorSize: number;
  writable: boolean;
  /** Top first. */
  layers: VhdxLayerInfo[];
  links: VhdxLinkInfo[];
}

const KINDS = { fixed: 0, dynamic: 1, differencing: 2 } as const;

async function create(kind: keyof typeof KINDS, path: string, o: VhdxCreateOptions & { parent?: string }): Promise<void> {
  const vs = o.virtualSize ?? 0;
  if (!Number.isSafeInteger(vs) || vs < 0) throw new StillpointError(`virtualSize must be a non-negative integer, got ${vs}`, { where: path });
  const bs = o.blockSize ?? (kind === 'differencing' ? 2 : 32) * 1024 * 1024;
  await call('create', [p.str(resolve(path)), p.i32(KINDS[kind]), p.i64(vs), p.i64(bs), p.i32(o.logicalSectorSize ?? 512),
    p.i32(o.physicalSectorSize ?? 4096), p.str(o.parent ? resolve(o.parent) : '')], path);
}

/** Creates a fixed VHDX (every block allocated up front; the file is sparse where the filesystem allows). */
export function createFixed(path: string, o: VhdxCreateOptions): Promise<void> {
  return create('fixed', path, o);
}

/** Creates a dynamic VHDX (blocks allocated on first write). */
export function createDynamic(path: string, o: VhdxCreateOptions): Promise<void> {
  return create('dynamic', path, o);
}

/** Creates a differencing VHDX (an AVHDX) over `parentPath`; relative_path + absolute paths + parent_linkage set. */
export function createDifferencing(path: string, parentPath: string, o: { blockSize?: number } = {}): Promise<void> {
  return create('differencing', path, { virtualSize: 0, blockSize: o.blockSize, parent: parentPath });
}

/**
 * Folds the differencing disk `childPath` into its parent (the parent becomes what the chain
 * read), then the caller may delete the child. Crash-safe: rerun after an interruption.
 */
export async function mergeIntoParent(childPath: string, o: { parentPath?: string; force?: boolean } = {}): Promise<void> {
  await call('merge', [p.str(resolve(childPath)), p.str(o.parentPath ? resolve(o.parentPath) : ''), p.i32(o.force ? 1 : 0)], childPath);
}

function checkRange(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new StillpointError(`${what} must be a non-negative integer, got ${v}`);
}

export class VhdxDisk implements OpenDisk {
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly blockSize: number;
  /** Resolved paths, top first. */
  readonly chain: string[];
  readonly writable: boolean;
  #handle: number | undefined;
  #inflight = new Set<Promise<unknown>>();

  private constructor(handle: number, info: VhdxInfo) {
    this.#handle = handle;
    const top = info.layers[0];
    this.virtualSize = info.virtualSize;
    this.logicalSectorSize = info.logicalSectorSize;
    this.physicalSectorSize = top.metadata.physicalSectorSize;
    this.blockSize = top.metadata.blockSize;
    this.chain = info.layers.map((l) => l.path);
    this.writable = info.writable;
  }

  /** Opens the chain whose top is `path` (parents found by their locators unless `parentPaths`). */
  static async open(path: string, o: VhdxOpenOptions = {}): Promise<VhdxDisk> {
    const flags = (o.writable ? 1 : 0) | (o.force ? 2 : 0) | (o.alone ? 4 : 0);
    const parents = (o.parentPaths ?? []).map((x) => resolve(x)).join('\n');
    const h = await call('open', [p.str(resolve(path)), p.str(parents), p.i32(flags)], path);
    try {
      return new VhdxDisk(h, await VhdxDisk.#info(h, path));
    } catch (e) {
      await call('close', [p.i64(h)], path).catch(() => undefined);
      throw e;
    }
  }

  static async #info(h: number, where: string): Promise<VhdxInfo> {
    const { out, n } = await callGrowing('info', [p.i64(h)], where);
    return JSON.parse(out.subarray(0, n).toString('utf8')) as VhdxInfo;
  }

  get #h(): number {
    if (this.#handle === undefined) throw new StillpointError('the VHDX disk is closed', { where: this.chain[0] });
    return this.#handle;
  }

  #track<T>(pr: Promise<T>): Promise<T> {
    this.#inflight.add(pr);
    const done = () => this.#inflight.delete(pr);
    pr.then(done, done);
    return pr;
  }

  /** Reads `length` bytes at virtual `offset` straight into `target` at `targetOffset` (no copy, off the event loop). */
  async read(offset: number, target: Buffer, length?: number, targetOffset = 0): Promise<void> {
    const len = length ?? target.length - targetOffset;
    checkRange('offset', offset); checkRange('length', len); checkRange('targetOffset', targetOffset);
    if (targetOffset + len > target.length) {
      throw new StillpointError(`read of ${len} bytes at buffer offset ${targetOffset} does not fit a ${target.length}-byte buffer`, { where: this.chain[0] });
    }
    if (offset + len > this.virtualSize) {
      throw new StillpointError(`read of ${len} bytes at ${offset} goes past the end of the virtual disk (${this.virtualSize} bytes)`, { where: this.chain[0] });
    }
    if (len === 0) return;
    await this.#track(call('read', [p.i64(this.#h), p.i64(offset), p.buf(target), p.i64(target.length), p.i64(targetOffset), p.i64(len)], this.chain[0]));
  }

  /**
   * Writes `source` at virtual `offset` into the top layer. Any offset and length: partial
   * sectors are read through the chain and rewritten (read-modify-write), so concurrent
   * unaligned writes to the same sector are not atomic. Durable only after `flush()`.
   */
  async write(offset: number, source: Buffer): Promise<void> {
    if (!this.writable) throw new StillpointError('the disk is open read-only; open it with { writable: true } to write', { where: this.chain[0] });
    checkRange('offset', offset);
    if (offset + source.length > this.virtualSize) {
      throw new StillpointError(`write of ${source.length} bytes at ${offset} goes past the end of the virtual disk (${this.virtualSize} bytes)`, { where: this.chain[0] });
    }
    if (source.length === 0) return;
    await this.#track(call('write', [p.i64(this.#h), p.i64(offset), p.buf(source), p.i64(source.length), p.i64(0), p.i64(source.length)], this.chain[0]));
  }

  /** Makes every write so far durable (metadata in crash-safe order, then fsync). */
  async flush(): Promise<void> {
    await this.#track(call('flush', [p.i64(this.#h)], this.chain[0]));
  }

  /** Extents covering [0, virtualSize) in order: `data` where some layer defines data, `zero` elsewhere. */
  async allocation(): Promise<Extent[]> {
    const { out, n } = await this.#track(callGrowing('allocation', [p.i64(this.#h)], this.chain[0], 24, 24 * 4096));
    const extents: Extent[] = new Array(n);
    for (let i = 0; i < n; i++) {
      extents[i] = {
        offset: Number(out.readBigUInt64LE(i * 24)),
        length: Number(out.readBigUInt64LE(i * 24 + 8)),
        kind: out.readBigUInt64LE(i * 24 + 16) === 1n ? 'data' : 'zero',
      };
    }
    return extents;
  }

  /** Headers, metadata, BAT summary by state, parent locator entries and each link's check. */
  info(): Promise<VhdxInfo> {
    return this.#track(VhdxDisk.#info(this.#h, this.chain[0]));
  }

  /** Waits for calls in flight, flushes (when writable) and releases the handle. Idempotent. */
  async close(): Promise<void> {
    if (this.#handle === undefined) return;
    await Promise.allSettled([...this.#inflight]);
    const h = this.#handle;
    this.#handle = undefined;
    await call('close', [p.i64(h)], this.chain[0]);
  }
}
