import createDebug from 'debug';
import type { ByteRange } from '../contracts/driver.ts';
import type { Extent, OpenDisk } from '../contracts/reader.ts';
import type { StorageTarget } from '../contracts/storage.ts';
import { CorruptImageError, StillpointError } from '../errors.ts';
import { BlobCodec, chunkNamer, type ChunkNamer, type RepositoryKeys } from './codec.ts';
import { diskRecordSchema, keys, TABLE_PAGE_CHUNKS, type DiskRecord, type StoredConfig } from './format.ts';
import { DEFAULT_PACK_SIZE, PackBuilder, PackIndex, packError, readPackedBlob, type ChunkLocation } from './packs.ts';
import { RetryingStorage, type RetryPolicy } from './storage-util.ts';
import { ChunkTableReader, ChunkTableWriter } from './table.ts';
import { ChunkWorkers, type SealResult, type SlabPlace } from './workers.ts';

const debug = createDebug('stillpoint:repository');

export interface StoreProgress {
  bytesRead: number;
  bytesStored: number;
}

export interface StoreDiskOptions {
  /** The same disk in the previous restore point of this VM (from `repo.latest()`), if any. */
  previous?: DiskRecord | null;
  /** Id of that restore point (for the reason text). */
  previousId?: string | null;
  /**
   * Ranges changed since the previous restore point's reference point. `undefined`: the driver
   * tracks no changes; `null`: tracking was reset or lost. Either way every allocated extent is read.
   */
  changed?: ByteRange[] | null;
  /**
   * Why there are no changed ranges (e.g. "change tracking was reset", "the previous restore point
   * has no reference point"), recorded in the disk's `reason` when every allocated extent is read.
   */
  fullReadReason?: string;
  onProgress?: (p: StoreProgress) => void;
  signal?: AbortSignal;
}

export interface DiskIdentity {
  id: string;
  virtualSize: number;
  logicalSectorSize: number;
}

/** Bytes a chunk buffer holds beyond the chunk size, so that the sealed blob fits in it (header 5 + nonce 12 + tag 16). */
const SEAL_SLACK = 64;

/**
 * Packs being stored at once by one disk's backup. Incompressible stretches of a disk fill packs
 * faster than a local disk writes and fsyncs them, compressible stretches slower: four let the
 * storage catch up instead of stalling the workers (memory: four packs of ~20 MiB).
 */
const PACKS_IN_FLIGHT = 4;

/** Chunks of a run read together during a restore hold at most this much plaintext. */
const RUN_PLAIN_MAX = 8 * 2 ** 20;

/** One unit of work: a chunk to read, given as the parts of it that hold data (absolute offsets). */
export interface ChunkWork {
  index: number;
  start: number;
  length: number;
  parts: ByteRange[];
}

/**
 * The data part of a repository: reading disks into chunks and chunks back into bytes. It needs
 * only a storage target, the repository's stored config and its keys, so it runs equally in the
 * coordinating process and on an off-host proxy; what it produces (`DiskRecord`) is plain JSON.
 */
export class RepositoryData {
  readonly storage: RetryingStorage;
  readonly codec: BlobCodec;
  /** Names chunks and chunk table pages as the repository's config says (`chunkHash`). */
  readonly nameChunk: ChunkNamer;
  private workersInstance: ChunkWorkers | null = null;
  /** Where every packed chunk is (format version 2), brought up to date before each disk is stored. */
  readonly packIndex: PackIndex;
  /** Chunk-sized buffers a restore handed back (`recycle`), for the next chunks read. */
  private readonly plainPool: ArrayBuffer[] = [];
  /** Slabs no `forEachChunk` is using. */
  private readonly freeSlabs: SharedArrayBuffer[] = [];
  /** Chunks being packed by any disk stored in this process -> settles once durable. */
  private readonly pendingChunks = new Map<string, Promise<void>>();

  constructor(
    storage: StorageTarget | RetryingStorage,
    readonly config: StoredConfig,
    readonly keys: RepositoryKeys | null,
    readonly options: {
      workers?: number; retry?: RetryPolicy; maxInFlightBytes?: number; started?: ChunkWorkers; packSize?: number; tablePageChunks?: number;
      /** See `OpenRepositoryOptions.cacheDir` and `memoryChunks`. */
      cacheDir?: string; memoryChunks?: number;
    } = {},
  ) {
    this.storage = storage instanceof RetryingStorage ? storage : new RetryingStorage(storage, options.retry);
    this.codec = new BlobCodec({ keys, compressionLevel: config.compression.level });
    this.nameChunk = chunkNamer(config.chunkHash, keys);
    this.packIndex = new PackIndex(this.storage, this.codec, { cacheDir: options.cacheDir, repositoryId: config.id, memoryChunks: options.memoryChunks });
    if (options.started) {
      options.started.setKeys(keys);
      this.workersInstance = options.started;
    }
  }

  get workers(): ChunkWorkers {
    this.workersInstance ??= new ChunkWorkers(this.keys, { compressionLevel: this.config.compression.level, chunkHash: this.config.chunkHash }, this.options.workers);
    return this.workersInstance;
  }

  async close(): Promise<void> {
    await this.workersInstance?.close();
    this.workersInstance = null;
    await this.packIndex.close();
  }

  // ---- small blobs (tables, manifests) --------------------------------------------------

  async putBlob(key: string, data: Buffer): Promise<number> {
    const sealed = this.codec.seal(key, data);
    await this.storage.put(key, sealed);
    return sealed.length;
  }

  async getBlob(key: string): Promise<Buffer> {
    return this.codec.open(key, await this.storage.get(key));
  }

  /** A disk's chunk table, read a page at a time (each page checked against its name and the disk). */
  tableReader(record: DiskRecord): ChunkTableReader {
    return new ChunkTableReader(record, (key) => this.getBlob(key), this.nameChunk);
  }

  // ---- backup ----------------------------------------------------------------------------

  /**
   * Read a disk into the repository: extents -> fixed chunks -> hash -> compress -> encrypt -> put.
   * Returns once every chunk and the chunk table are durable; the result is attached to a restore
   * point with `writer.addDisk()`.
   */
  async storeDiskData(disk: DiskIdentity, source: OpenDisk, options: StoreDiskOptions = {}): Promise<DiskRecord> {
    const where = `disk ${disk.id}`;
    const chunkSize = this.config.chunkSize;
    if (source.virtualSize !== disk.virtualSize) {
      throw new StillpointError(`the opened disk is ${source.virtualSize} bytes but the disk is said to be ${disk.virtualSize}`, { where });
    }
    const chunkCount = Math.ceil(disk.virtualSize / chunkSize);

    // What to read: everything, or only what changed.
    const previous = options.previous ?? null;
    /** The previous restore point's chunk table (a page at a time). */
    let prev: ChunkTableReader | null = null;
    let reason: string;
    let changed: ByteRange[] | null = null;
    if (!previous) {
      reason = 'full read: no previous restore point of this disk';
    } else if (previous.chunkSize !== chunkSize || previous.virtualSize !== disk.virtualSize) {
      reason = previous.virtualSize !== disk.virtualSize
        ? `full read: the disk's size changed since the previous restore point (${previous.virtualSize} -> ${disk.virtualSize} bytes)`
        : `full read: the repository's chunk size changed since the previous restore point`;
    } else {
      prev = this.tableReader(previous);
      if ((options.changed === undefined || options.changed === null) && options.fullReadReason) {
        reason = `full read: ${options.fullReadReason}; unchanged chunks were skipped by hash`;
      } else if (options.changed === undefined) {
        reason = 'full read: no change tracking for this disk; unchanged chunks were skipped by hash';
      } else if (options.changed === null) {
        reason = 'full read: change tracking was reset or lost since the previous restore point; unchanged chunks were skipped by hash';
      } else {
        changed = normaliseRanges(options.changed, disk.virtualSize);
        const changedBytes = changed.reduce((n, r) => n + r.length, 0);
        reason = `incremental: ${changed.length} changed range(s), ${changedBytes} bytes, since restore point ${options.previousId ?? '(previous)'}`;
      }
    }
    const fullRead = changed === null;
    debug('%s: %s', where, reason);

    const allocation = checkAllocation(await source.allocation(), disk.virtualSize, where);
    // Which chunks the repository holds (packs written since this process last looked included),
    // and the previous table's first page: needed only once the first chunk is sealed, so the
    // workers start at once.
    const ready = Promise.all([prev?.page(0), this.packIndex.sync()]).then(() => undefined);
    ready.catch(() => undefined); // awaited by the first chunk
    // The new table, a page at a time: an incremental starts from the previous restore point's
    // (chunks outside the changed ranges keep their entries).
    const table = new ChunkTableWriter(chunkSize, disk.virtualSize, this.options.tablePageChunks ?? TABLE_PAGE_CHUNKS, changed ? prev : null, async (page) => {
      const id = this.nameChunk(page);
      const key = keys.table(id);
      if ((await this.storage.head(key)) === null) progress.bytesStored += await this.putBlob(key, page);
      return id;
    });
    const packs = new PackBuilder(this.storage, this.codec, this.packIndex, this.options.packSize ?? DEFAULT_PACK_SIZE, PACKS_IN_FLIGHT, this.pendingChunks);
    /** Chunks another disk (stored at the same time) is packing: durable before this table is written. */
    const elsewhere = new Set<Promise<void>>();
    const progress: StoreProgress = { bytesRead: 0, bytesStored: 0 };
    /** Bytes of chunks found unchanged at their place (named, not sealed again). */
    let bytesUnchanged = 0;
    const work = planChunks(chunkSize, disk.virtualSize, allocation, changed, (index) => table.set(index, null));
    // Chunks in flight (read, sealed or being stored): storing waits on fsync, so keep more of
    // them going than there are workers, within a memory bound (each holds up to 2 chunk sizes).
    const inFlight = Math.max(2, Math.min(32, Math.floor((this.options.maxInFlightBytes ?? 32 * 2 ** 20) / chunkSize)));
    const free: ArrayBuffer[] = [];

    /** Read a group of chunks (neighbours in one extent: one `readv` when the source has it) into `bufs`. */
    const readGroup = async (group: ChunkWork[], bufs: ArrayBuffer[]): Promise<void> => {
      const views = group.map((item, k) => Buffer.from(bufs[k], 0, item.length));
      if (group.length > 1 && source.readv) {
        const length = views.reduce((n, v) => n + v.length, 0);
        try {
          await source.readv(group[0].start, views);
        } catch (cause) {
          throw new StillpointError(`reading ${length} bytes at offset ${group[0].start} failed: ${(cause as Error).message}`, { where, cause });
        }
        progress.bytesRead += length;
        return;
      }
      for (const [k, item] of group.entries()) {
        let covered = 0;
        for (const part of item.parts) covered += part.length;
        if (covered < item.length) views[k].fill(0);
        for (const part of item.parts) {
          try {
            await source.read(part.offset, views[k], part.length, part.offset - item.start);
          } catch (cause) {
            throw new StillpointError(`reading ${part.length} bytes at offset ${part.offset} failed: ${(cause as Error).message}`, { where, cause });
          }
        }
        progress.bytesRead += covered;
      }
    };

    const storeChunk = async (item: ChunkWork, sealing: Promise<SealResult>, before: Promise<void>): Promise<void> => {
      const sealed = await sealing;
      const ab = sealed.buf;
      await before;
      // Chunks are stored in disk order: the table pages before this chunk's are complete.
      table.advance(item.index);
      if (sealed.id === null) {
        free.push(ab);
        table.set(item.index, null);
      } else {
        const id = sealed.id;
        // The worker already found an unchanged chunk to be what its place held.
        const atPlace = sealed.unchanged ? id : prev ? await prev.entry(item.index) : null;
        await packs.ready();
        // Known: in the previous table at the same place, in a pack, or in a pack being filled
        // (this disk's or, then durable before this table is written, another disk's).
        let known = atPlace === id || this.packIndex.get(id) !== undefined || packs.holds(id);
        const packing = known ? undefined : this.pendingChunks.get(id);
        if (packing) {
          elsewhere.add(packing);
          known = true;
        }
        if (sealed.unchanged) bytesUnchanged += item.length;
        if (!known) {
          if (!sealed.blob) throw new StillpointError(`chunk ${id} was not sealed, and the repository does not hold it`, { where });
          progress.bytesStored += sealed.blob.length;
          packs.add(id, sealed.blob); // copied into the pack: the buffer can be reused
        }
        free.push(ab);
        table.set(item.index, id);
      }
      options.onProgress?.({ ...progress });
    };

    // Chunks go into packs in disk order, whatever order the workers finish them in, so that a
    // restore reads neighbouring chunks with one ranged read: each chunk waits for the one before
    // (its turn is taken, in plan order, before its group's first await).
    let turn: Promise<void> = ready;
    const processGroup = async (group: ChunkWork[]): Promise<void> => {
      const turns = group.map(() => {
        const before = turn;
        let done!: () => void;
        turn = new Promise<void>((resolve) => (done = resolve));
        return { before, done };
      });
      try {
        // Room for the sealed blob too (the worker writes it over the chunk: at most 64 bytes more).
        const bufs = group.map(() => free.pop() ?? new ArrayBuffer(chunkSize + SEAL_SLACK));
        await readGroup(group, bufs);
        // A group goes to one worker in one message (one wake-up and one reply for all of it).
        // What each chunk's place held in the previous restore point: a chunk that hashes to it is
        // only named, not compressed and encrypted again. A full read waits for that table's page
        // (most of its chunks are unchanged); an incremental reads changed ranges and takes what
        // is loaded already.
        const previousIds = !prev
          ? undefined
          : fullRead
            ? await Promise.all(group.map((item) => prev!.entry(item.index).catch(() => null)))
            : group.map((item) => prev!.loaded(item.index) ?? null);
        const sealing = this.workers.sealMany(bufs, group.map((item) => item.length), previousIds);
        const stored = await Promise.allSettled(group.map((item, k) => storeChunk(item, sealing[k], turns[k].before).finally(turns[k].done)));
        const failed = stored.find((r) => r.status === 'rejected');
        if (failed) throw (failed as PromiseRejectedResult).reason;
      } finally {
        for (const t of turns) t.done();
      }
    };

    try {
      // Without `readv` every chunk is read on its own, as many at once as are in flight (for a
      // source with latency); with it, neighbours are read together and as many groups run.
      const perGroup = source.readv ? Math.max(1, Math.floor(READ_GROUP_BYTES / chunkSize)) : 1;
      await runBounded(readGroups(work, perGroup * chunkSize), Math.max(2, Math.floor(inFlight / perGroup)), processGroup, options.signal);
      await ready; // also when no chunk was read
    } catch (error) {
      await packs.settle();
      await table.settle();
      throw error;
    }
    // The last pages of the chunk table are stored while the last packs are: nothing refers to
    // them before the manifest, which is written only once this returns, so every pack (and its
    // index) is durable before any restore point names its chunks — also the packs of chunks
    // another disk stored meanwhile.
    const tableStored = table.finish();
    tableStored.catch(() => undefined);
    try {
      await packs.finish();
    } catch (error) {
      await table.settle();
      throw error;
    }
    try {
      await Promise.all(elsewhere);
    } catch (cause) {
      throw new StillpointError('a chunk this disk shares with another disk being stored at the same time could not be stored', { where, cause, hint: 'see the other disk\'s error; back up again' });
    }
    const tablePages = await tableStored;
    options.onProgress?.({ ...progress });
    return diskRecordSchema.parse({
      id: disk.id,
      virtualSize: disk.virtualSize,
      logicalSectorSize: disk.logicalSectorSize,
      chunkSize,
      chunkCount,
      tablePages,
      tablePageChunks: table.pageChunks,
      dataChunks: table.dataChunks,
      zeroChunks: chunkCount - table.dataChunks,
      bytesRead: progress.bytesRead,
      bytesStored: progress.bytesStored,
      bytesUnchanged,
      fullRead,
      reason,
    });
  }


  // ---- restore ---------------------------------------------------------------------------

  /**
   * Fetch, decrypt, decompress and check one chunk. The content is re-hashed when `rehash`
   * (verify) or when the repository is not encrypted; in an encrypted repository the AES-GCM tag,
   * which binds the blob to its name, already proves it is the chunk that was stored.
   */
  async readChunk(id: string, rehash = false, into?: SlabPlace): Promise<Buffer> {
    let at = this.packIndex.get(id);
    if (!at) {
      await this.packIndex.sync(2000);
      at = this.packIndex.get(id);
    }
    if (at) {
      let blob: Buffer;
      try {
        blob = await readPackedBlob(this.storage, id, at);
      } catch (error) {
        // Repacked by gc meanwhile? Look again once.
        await this.packIndex.sync();
        const again = this.packIndex.get(id);
        if (!again || again.pack === at.pack) throw error;
        at = again;
        blob = await readPackedBlob(this.storage, id, at);
      }
      return this.decodePacked(id, blob, at, rehash, into);
    }
    // Format version 1: one object per chunk.
    const key = keys.chunk(id);
    const blob = await this.storage.get(key).catch((error) => {
      if (error?.name === 'NotFoundError') {
        throw new CorruptImageError(`chunk ${id} is missing from the repository`, { where: key, hint: 'run `stillpoint verify` to list every damaged restore point', cause: error });
      }
      throw error;
    });
    return this.workers.open(key, blob, rehash || !this.keys ? id : null, undefined, into);
  }

  /**
   * A slab of at least `bytes` shared with the workers, for one `forEachChunk` at a time (taken
   * from the free ones, or made and shared once); hand it back with `releaseSlab`.
   */
  private takeSlab(bytes: number): { id: number; sab: SharedArrayBuffer } {
    const i = this.freeSlabs.findIndex((s) => s.byteLength >= bytes);
    const sab = i >= 0 ? this.freeSlabs.splice(i, 1)[0] : new SharedArrayBuffer(bytes);
    return { id: this.workers.shareSlab(sab), sab };
  }

  private releaseSlab(sab: SharedArrayBuffer): void {
    if (this.freeSlabs.length < 2) this.freeSlabs.push(sab);
    else this.workers.unshareSlab(sab);
  }

  /** Decrypt, decompress (and check) a chunk's blob read from its pack. */
  private async decodePacked(id: string, blob: Buffer, at: ChunkLocation, rehash = false, into?: SlabPlace): Promise<Buffer> {
    try {
      // The blob is bound to the chunk's name (not to the pack), so gc can move it between packs.
      return await this.workers.open(keys.chunk(id), blob, rehash || !this.keys ? id : null, into ? undefined : this.plainPool.pop(), into);
    } catch (error) {
      throw packError(id, at, error);
    }
  }

  /**
   * Read chunks `index`, `index + 1`, … that lie back to back in one pack with one ranged read
   * (at most `maxBytes`, not past `last` nor past the table page of `index`, which is loaded),
   * and decode each. Returns one promise per chunk read; a chunk whose run cannot be read is read
   * on its own (which looks for a moved pack).
   */
  private readRun(table: ChunkTableReader, index: number, last: number, maxBytes: number, place?: (index: number) => SlabPlace): Array<Promise<Buffer>> {
    last = Math.min(last, table.pageEnd(index));
    const first = table.at(index)!;
    const at = this.packIndex.get(first);
    if (!at) return [this.readChunk(first, false, place?.(index))];
    const members: Array<{ id: string; at: ChunkLocation }> = [{ id: first, at }];
    let end = at.offset + at.length;
    for (let i = index + 1; i < last; i++) {
      const id = table.at(i);
      const next = id === null ? undefined : this.packIndex.get(id);
      if (!next || next.pack !== at.pack || next.offset !== end || end + next.length - at.offset > maxBytes) break;
      members.push({ id: id!, at: next });
      end += next.length;
    }
    if (members.length === 1) return [this.readChunk(first, false, place?.(index))];
    const fetched = readPackedBlob(this.storage, first, { pack: at.pack, offset: at.offset, length: end - at.offset });
    const items = members.map((m) => ({ name: keys.chunk(m.id), offset: m.at.offset - at.offset, length: m.at.length, expectId: this.keys ? null : m.id }));
    const decoded = fetched.then((blob) => {
      if (place) return this.workers.openRun(blob, items, [], members.map((_, k) => place(index + k)));
      const outs = members.map(() => this.plainPool.pop()).filter((b): b is ArrayBuffer => b !== undefined);
      return this.workers.openRun(blob, items, outs);
    });
    decoded.catch(() => undefined);
    return members.map((m, k) =>
      decoded.then(
        (results) => results[k].catch((error: unknown) => { throw packError(m.id, m.at, error); }),
        // The run could not be read (a pack moved by gc?): this chunk on its own, which looks again.
        () => this.readChunk(m.id, false, place?.(index + k)),
      ),
    );
  }

  /**
   * Hand back a chunk's data from `readChunk` once it is no longer used (written out), so that its
   * buffer is filled again instead of a new one being made per chunk.
   */
  recycle(data: Buffer): void {
    const ab = data.buffer;
    if (ab instanceof ArrayBuffer && data.byteOffset === 0 && ab.byteLength === this.config.chunkSize && this.plainPool.length < 64) this.plainPool.push(ab);
  }

  /**
   * Deliver the chunks of a disk that overlap [from, to) in order, fetching and decoding several
   * at once. `data` is null for a zero chunk; otherwise it is valid only until `sink` returns
   * (it may be a place in a buffer shared with the workers, taken by a later chunk).
   */
  async forEachChunk(
    record: DiskRecord,
    table: ChunkTableReader,
    range: { from: number; to: number },
    sink: (chunk: { index: number; offset: number; length: number; data: Buffer | null }) => Promise<void>,
    concurrency = Math.max(4, Math.min(128, Math.floor(32 * 2 ** 20 / record.chunkSize))),
  ): Promise<void> {
    // Packs stored by other processes (a proxy, another backup) since this one last looked.
    await this.packIndex.sync();
    const first = Math.floor(range.from / record.chunkSize);
    const last = Math.ceil(range.to / record.chunkSize);
    const window: Array<Promise<{ index: number; id: string | null; data: Buffer | null }>> = [];
    let next = first;
    /** Chunks of a run read ahead together, not yet in the window. */
    const ahead = new Map<number, Promise<Buffer>>();
    const runBytes = Math.max(2 * 2 ** 20, record.chunkSize);
    // Plaintext goes into a ring of chunk-sized places in a slab shared with the workers: the
    // window's chunks, plus room for a run read ahead. Chunk i's place is taken again by chunk
    // i + slots, which is started only after chunk i was handed to the sink.
    const runChunks = Math.floor(RUN_PLAIN_MAX / record.chunkSize);
    const slots = concurrency + runChunks;
    const taken = record.chunkSize <= RUN_PLAIN_MAX ? this.takeSlab(slots * record.chunkSize) : null;
    const ring = taken?.id ?? null;
    let delivered = first;
    const place = ring !== null ? (index: number): SlabPlace => ({ slab: ring, offset: ((index - first) % slots) * record.chunkSize, length: record.chunkSize }) : undefined;
    /** Start chunk `index` (its table page is loaded). */
    const start = (index: number) => {
      const id = table.at(index);
      let data: Promise<Buffer | null>;
      if (id === null) {
        data = Promise.resolve(null);
      } else if (ahead.has(index)) {
        data = ahead.get(index)!;
        ahead.delete(index);
      } else {
        // A run reaches no chunk whose place is still held by one not yet handed to the sink.
        const run = this.readRun(table, index, ring !== null ? Math.min(last, delivered + slots) : last, runBytes, place);
        run.forEach((p, k) => {
          p.catch(() => undefined);
          if (k > 0) ahead.set(index + k, p);
        });
        data = run[0];
      }
      const p = data.then((d) => ({ index, id, data: d }));
      p.catch(() => undefined);
      window.push(p);
    };
    const startNext = async () => {
      const index = next++;
      if (table.loaded(index) === undefined) await table.ensure(index);
      start(index);
    };
    try {
      while (next < last && window.length < concurrency) await startNext();
      while (window.length > 0) {
        const { index, id, data } = await window.shift()!;
        const offset = index * record.chunkSize;
        const length = Math.min(record.chunkSize, record.virtualSize - offset);
        if (data !== null && data.length !== length) {
          throw new CorruptImageError(`chunk ${id} holds ${data.length} bytes, expected ${length}`, { where: `disk ${record.id}, offset ${offset}` });
        }
        // `data` may be a place in the slab: the sink must be done with it when it returns.
        await sink({ index, offset, length, data });
        delivered = index + 1;
        if (next < last) await startNext();
      }
    } finally {
      // Every read and decode into the slab settled before another use may take it.
      await Promise.allSettled([...window, ...ahead.values()]);
      if (taken) this.releaseSlab(taken.sab);
    }
  }
}

/** A backup reads neighbouring chunks of a data extent together, up to this many bytes (one `readv`). */
const READ_GROUP_BYTES = 2 ** 20;

/**
 * Chunks in groups that one read fills: neighbours that lie whole in data (one part covering the
 * chunk), up to `maxBytes` together; any other chunk is a group of its own.
 */
export function* readGroups(work: Iterable<ChunkWork>, maxBytes: number): Generator<ChunkWork[]> {
  const whole = (item: ChunkWork) => item.parts.length === 1 && item.parts[0].offset === item.start && item.parts[0].length === item.length;
  let group: ChunkWork[] = [];
  let bytes = 0;
  for (const item of work) {
    const last = group[group.length - 1];
    const joins = last && whole(item) && whole(last) && last.start + last.length === item.start && bytes + item.length <= maxBytes;
    if (!joins && group.length) {
      yield group;
      group = [];
      bytes = 0;
    }
    group.push(item);
    bytes += item.length;
  }
  if (group.length) yield group;
}

/** Sort, clamp and merge byte ranges. */
export function normaliseRanges(ranges: ByteRange[], size: number): ByteRange[] {
  const sorted = ranges
    .map((r) => ({ offset: Math.max(0, r.offset), end: Math.min(size, r.offset + r.length) }))
    .filter((r) => r.end > r.offset)
    .sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of sorted) {
    const lastRange = out[out.length - 1];
    if (lastRange && r.offset <= lastRange.offset + lastRange.length) {
      lastRange.length = Math.max(lastRange.length, r.end - lastRange.offset);
    } else {
      out.push({ offset: r.offset, length: r.end - r.offset });
    }
  }
  return out;
}

function checkAllocation(extents: Extent[], size: number, where: string): Extent[] {
  let pos = 0;
  for (const e of extents) {
    if (e.offset !== pos || e.length < 0) {
      throw new StillpointError(`the disk reader's allocation has a gap or overlap at offset ${pos} (extent at ${e.offset})`, { where, hint: 'this is a bug in the disk reader' });
    }
    pos += e.length;
  }
  if (pos !== size) throw new StillpointError(`the disk reader's allocation covers ${pos} of ${size} bytes`, { where, hint: 'this is a bug in the disk reader' });
  return extents;
}

/**
 * The chunks to read, in disk order: each chunk that overlaps a data extent (and, for an
 * incremental, a changed range), with the data parts inside it. Chunks with nothing to read that
 * must be (re)written are reported through `zero`.
 */
export function* planChunks(
  chunkSize: number,
  size: number,
  allocation: Extent[],
  changed: ByteRange[] | null,
  zero: (index: number) => void,
): Generator<ChunkWork> {
  const data = allocation.filter((e) => e.kind === 'data' && e.length > 0);
  // The chunk index ranges to consider.
  const spans: Array<[number, number]> = changed
    ? changed.map((r) => [Math.floor(r.offset / chunkSize), Math.ceil((r.offset + r.length) / chunkSize)])
    : [[0, Math.ceil(size / chunkSize)]];
  let e = 0;
  let lastIndex = -1;
  for (const [from, to] of spans) {
    for (let index = Math.max(from, lastIndex + 1); index < to; index++) {
      lastIndex = index;
      const start = index * chunkSize;
      const end = Math.min(size, start + chunkSize);
      while (e < data.length && data[e].offset + data[e].length <= start) e++;
      const parts: ByteRange[] = [];
      for (let k = e; k < data.length && data[k].offset < end; k++) {
        const s = Math.max(start, data[k].offset);
        const t = Math.min(end, data[k].offset + data[k].length);
        if (t > s) parts.push({ offset: s, length: t - s });
      }
      if (parts.length === 0) {
        zero(index);
        continue;
      }
      yield { index, start, length: end - start, parts };
    }
  }
}

/** Run `fn` over `items` with at most `limit` at a time; stop at the first error and rethrow it. */
export async function runBounded<T>(items: Iterable<T>, limit: number, fn: (item: T) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const iterator = items[Symbol.iterator]();
  let failed: unknown = null;
  let hasFailed = false;
  const lane = async () => {
    for (;;) {
      if (hasFailed) return;
      if (signal?.aborted) {
        if (!hasFailed) {
          hasFailed = true;
          failed = new StillpointError('the backup of this disk was aborted', { cause: signal.reason });
        }
        return;
      }
      const next = iterator.next();
      if (next.done) return;
      try {
        await fn(next.value);
      } catch (error) {
        if (!hasFailed) {
          hasFailed = true;
          failed = error;
        }
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, lane));
  if (hasFailed) throw failed;
}

