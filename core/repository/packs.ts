import { randomBytes } from 'node:crypto';
import createDebug from 'debug';
import { CorruptImageError, NotFoundError, StillpointError } from '../errors.ts';
import type { BlobCodec } from './codec.ts';
import { keys } from './format.ts';
import { allocAligned } from '../util/direct-io.ts';
import type { RetryingStorage } from './storage-util.ts';
import { PackIndexStore } from './pack-store.ts';

const debug = createDebug('stillpoint:repository');

/**
 * Pack files (format version 2, docs/repository-format.md): many chunk blobs in one storage
 * object `packs/<xx>/<pack id>`, found through the pack's index `index/<pack id>` (a blob: the
 * chunk names with their offset and length in the pack). A pack is put (durably) before its
 * index, so a chunk listed by an index is durable; a pack without an index is an orphan of a
 * backup that stopped (garbage collection removes it).
 */
export const PACK_INDEX_MAGIC = Buffer.from('SPI', 'ascii');
export const PACK_INDEX_VERSION = 1;
const ENTRY = 40;
/** Default target size of a pack (a pack is closed once it holds at least this much). */
export const DEFAULT_PACK_SIZE = 16 * 2 ** 20;

export interface PackEntry {
  /** Chunk name (64 hex digits). */
  id: string;
  offset: number;
  length: number;
}

export interface ChunkLocation {
  pack: string;
  offset: number;
  length: number;
}

/** "SPI" | version (1) | count (u32 LE) | count x (chunk name (32) | offset (u32 LE) | length (u32 LE)). */
export function encodePackIndex(entries: PackEntry[]): Buffer {
  const out = Buffer.alloc(8 + entries.length * ENTRY);
  PACK_INDEX_MAGIC.copy(out, 0);
  out[3] = PACK_INDEX_VERSION;
  out.writeUInt32LE(entries.length, 4);
  entries.forEach((e, i) => {
    const at = 8 + i * ENTRY;
    out.write(e.id, at, 32, 'hex');
    out.writeUInt32LE(e.offset, at + 32);
    out.writeUInt32LE(e.length, at + 36);
  });
  return out;
}

export function decodePackIndex(buf: Buffer, where: string): PackEntry[] {
  return decodeEntries(packIndexEntries(buf, where));
}

/** The entries of a pack index, checked, in their binary form (count x 40 bytes). */
export function packIndexEntries(buf: Buffer, where: string): Buffer {
  if (buf.length < 8 || !buf.subarray(0, 3).equals(PACK_INDEX_MAGIC)) throw new CorruptImageError('not a pack index (bad magic)', { where, hint: 'run `stillpoint verify --deep`' });
  if (buf[3] !== PACK_INDEX_VERSION) throw new CorruptImageError(`pack index version ${buf[3]} is not supported`, { where, hint: 'upgrade Stillpoint' });
  const count = buf.readUInt32LE(4);
  if (buf.length !== 8 + count * ENTRY) throw new CorruptImageError(`pack index is ${buf.length} bytes, expected ${8 + count * ENTRY} for ${count} entries`, { where });
  return buf.subarray(8);
}

function decodeEntries(raw: Buffer): PackEntry[] {
  const out: PackEntry[] = [];
  for (let at = 0; at < raw.length; at += ENTRY) {
    out.push({ id: raw.toString('hex', at, at + 32), offset: raw.readUInt32LE(at + 32), length: raw.readUInt32LE(at + 36) });
  }
  return out;
}

/** `PackIndex.packs`: each pack's entries, decoded from their binary form when asked for. */
class PacksView implements ReadonlyMap<string, PackEntry[]> {
  constructor(private readonly source: { names(): Iterable<string>; count: number; raw(pack: string): Buffer | undefined }) {}
  get size(): number {
    return this.source.count;
  }
  get(pack: string): PackEntry[] | undefined {
    const raw = this.source.raw(pack);
    return raw === undefined ? undefined : decodeEntries(raw);
  }
  has(pack: string): boolean {
    return this.source.raw(pack) !== undefined;
  }
  *keys(): MapIterator<string> {
    yield* this.source.names();
  }
  *values(): MapIterator<PackEntry[]> {
    for (const pack of this.source.names()) yield this.get(pack)!;
  }
  *entries(): MapIterator<[string, PackEntry[]]> {
    for (const pack of this.source.names()) yield [pack, this.get(pack)!];
  }
  [Symbol.iterator](): MapIterator<[string, PackEntry[]]> {
    return this.entries();
  }
  forEach(fn: (value: PackEntry[], key: string, map: ReadonlyMap<string, PackEntry[]>) => void): void {
    for (const [k, v] of this.entries()) fn(v, k, this);
  }
}

export function newPackId(): string {
  return randomBytes(16).toString('hex');
}

export interface PackIndexOptions {
  /** Where the pack index may go when it outgrows memory (a directory per repository is made in it). */
  cacheDir?: string;
  /** The repository's id (names its directory in `cacheDir`). */
  repositoryId?: string;
  /** Chunks kept in memory before packs move to the disk cache (default 1,000,000: about 60 MiB). */
  memoryChunks?: number;
}

export const DEFAULT_MEMORY_CHUNKS = 1_000_000;

/**
 * Where each chunk is: the union of every pack index in the repository, kept in memory and brought
 * up to date with `sync()` (new indexes are loaded, removed ones dropped). An index that cannot be
 * read is remembered in `damaged` (its chunks count as missing; gc leaves its pack alone).
 *
 * Compact, because it grows with the repository (a TiB of disk is four million 256 KiB chunks):
 * each pack's entries stay in their binary form (40 bytes a chunk), found through an
 * open-addressing table of (pack, entry) numbers keyed by the chunk name's first bytes (names are
 * hashes, so evenly spread): about 56 bytes a chunk, where a Map of strings and objects took 190.
 *
 * Bounded, given a cache directory (`PackIndexOptions.cacheDir`): beyond `memoryChunks` chunks
 * in memory, packs move to a hash table on disk (`PackIndexStore`, kept between runs), and once
 * there is one, every pack goes there as soon as it is known; a lookup tries memory, then the
 * disk cache.
 */
export class PackIndex {
  /** Pack number -> pack id, and its entries as stored (40 bytes each); null once dropped. */
  private readonly packIds: Array<string | null> = [];
  private readonly raw: Array<Buffer | null> = [];
  private readonly packNo = new Map<string, number>();
  /** Open addressing: slot -> pack number and entry number (-1: empty). */
  private slotPack = new Int32Array(1024).fill(-1);
  private slotEntry = new Int32Array(1024);
  private chunks = 0;
  private readonly probe = Buffer.alloc(32);
  readonly damaged = new Map<string, string>();
  private syncing: Promise<void> | null = null;
  private syncedAt = 0;

  /** The disk cache the index moved to (see `PackIndexOptions`), once it has. */
  private store: PackIndexStore | null = null;
  /** Store operations, one at a time (moving packs there, forgetting removed ones). */
  private storeOps: Promise<void> = Promise.resolve();
  private moving = false;
  /** Why the disk cache could not be used: packs then stay in memory. */
  private storeFailure: Error | null = null;
  private readonly memoryChunks: number;

  constructor(private readonly storage: RetryingStorage, private readonly codec: BlobCodec, private readonly options: PackIndexOptions = {}) {
    this.memoryChunks = options.memoryChunks ?? DEFAULT_MEMORY_CHUNKS;
  }

  /** How many chunks are indexed (those in the disk cache counted once per pack holding them). */
  get size(): number {
    return this.chunks + (this.store?.entryCount ?? 0);
  }

  /** How many chunks are held in memory (the rest, if any, are in the disk cache). */
  get inMemory(): number {
    return this.chunks;
  }

  get(id: string): ChunkLocation | undefined {
    if (id.length !== 64) return undefined;
    this.probe.write(id, 'hex');
    const slot = this.slotOf(this.probe, 0);
    const p = this.slotPack[slot];
    if (p < 0) return this.store?.get(this.probe);
    const raw = this.raw[p]!;
    const at = this.slotEntry[slot] * ENTRY;
    return { pack: this.packIds[p]!, offset: raw.readUInt32LE(at + 32), length: raw.readUInt32LE(at + 36) };
  }

  /** Wait for packs being moved to the disk cache, and close it. */
  async close(): Promise<void> {
    await this.storeOps.catch(() => undefined);
    await this.store?.close();
    this.store = null;
  }

  /** Whether packs should move (or have moved) to the disk cache. */
  private get overBudget(): boolean {
    return this.options.cacheDir !== undefined && this.storeFailure === null && (this.store !== null || this.chunks > this.memoryChunks);
  }

  /**
   * Move every pack held in memory to the disk cache (opened or created first). Until it is
   * written, a pack stays in memory, so a lookup finds it all along; a failure leaves it there.
   */
  private moveToStore(): Promise<void> {
    return this.storeOp(async () => {
      if (!this.options.cacheDir || !this.options.repositoryId) return;
      try {
        this.store ??= await PackIndexStore.open(this.options.cacheDir, this.options.repositoryId);
        const moving: Array<{ pack: string; raw: Buffer }> = [];
        this.raw.forEach((raw, p) => {
          if (raw) moving.push({ pack: this.packIds[p]!, raw });
        });
        if (moving.length === 0) return;
        await this.store.add(moving);
        // Dropped from memory only now (a pack added meanwhile stays for the next move).
        this.forget(moving.map((m) => m.pack));
        debug('pack index: %d packs moved to %s (%d chunks left in memory)', moving.length, this.store.path, this.chunks);
      } catch (error) {
        this.storeFailure ??= error as Error;
        debug('pack index: moving packs to the cache failed, they stay in memory: %s', (error as Error).message);
        throw error;
      }
    });
  }

  /** Run `op` on the disk cache after the operations before it (one at a time); a failure does not stop the next. */
  private storeOp(op: () => Promise<void>): Promise<void> {
    const run = this.storeOps.then(op);
    this.storeOps = run.catch(() => undefined);
    return run;
  }

  /** After packs were added to memory: move them to the disk cache when over budget (in the background). */
  private maybeMove(): void {
    if (!this.overBudget || this.moving) return;
    this.moving = true;
    void this.moveToStore().catch(() => undefined).finally(() => (this.moving = false));
  }

  /** The slot holding the chunk named by the 32 bytes of `name` at `at`, or the empty slot where it would go. */
  private slotOf(name: Buffer, at: number): number {
    const mask = this.slotPack.length - 1;
    for (let slot = name.readUInt32BE(at) & mask; ; slot = (slot + 1) & mask) {
      const p = this.slotPack[slot];
      if (p < 0) return slot;
      const et = this.slotEntry[slot] * ENTRY;
      if (this.raw[p]!.compare(name, at, at + 32, et, et + 32) === 0) return slot;
    }
  }

  /** Every pack with an index, and its entries (decoded when asked for). */
  get packs(): ReadonlyMap<string, PackEntry[]> {
    const index = this;
    return new PacksView({
      get count() {
        let n = index.packNo.size;
        if (index.store) for (const pack of index.store.packs.keys()) if (!index.packNo.has(pack)) n++;
        return n;
      },
      *names() {
        yield* index.packNo.keys();
        if (index.store) for (const pack of index.store.packs.keys()) if (!index.packNo.has(pack)) yield pack;
      },
      raw(pack) {
        const p = index.packNo.get(pack);
        return p !== undefined ? index.raw[p]! : index.store?.entries(pack);
      },
    });
  }

  /** Record a pack whose pack object and index are durable. */
  add(pack: string, entries: PackEntry[]): void {
    this.addRaw(pack, encodePackIndex(entries).subarray(8));
    this.maybeMove();
  }

  private addRaw(pack: string, entries: Buffer): void {
    if (this.packNo.has(pack)) this.forget([pack]);
    const p = this.packIds.push(pack) - 1;
    this.raw.push(Buffer.from(entries)); // its own copy: not a view holding a larger buffer alive
    this.packNo.set(pack, p);
    const count = entries.length / ENTRY;
    this.reserve(this.chunks + count);
    for (let e = 0; e < count; e++) this.insert(p, e);
  }

  /** Place entry `e` of pack `p`; a chunk already indexed now points to this pack (the latest). */
  private insert(p: number, e: number): void {
    const slot = this.slotOf(this.raw[p]!, e * ENTRY);
    if (this.slotPack[slot] < 0) this.chunks++;
    this.slotPack[slot] = p;
    this.slotEntry[slot] = e;
  }

  /** Room for `n` chunks at a load of at most one half. */
  private reserve(n: number): void {
    if (n * 2 <= this.slotPack.length) return;
    let capacity = this.slotPack.length;
    while (n * 2 > capacity) capacity *= 2;
    this.rebuild(capacity);
  }

  private rebuild(capacity = this.slotPack.length): void {
    this.slotPack = new Int32Array(capacity).fill(-1);
    this.slotEntry = new Int32Array(capacity);
    this.chunks = 0;
    this.raw.forEach((raw, p) => {
      if (raw) for (let e = 0; e < raw.length / ENTRY; e++) this.insert(p, e);
    });
  }

  /** Drop packs from memory (moved to the disk cache, or removed from the repository). */
  private forget(packs: string[]): void {
    if (packs.length === 0) return;
    for (const pack of packs) {
      const p = this.packNo.get(pack);
      if (p === undefined) continue;
      this.packNo.delete(pack);
      this.packIds[p] = null;
      this.raw[p] = null;
    }
    // A chunk also held by a pack that stays is found there again; the table shrinks to fit
    // (after a move to the disk cache, memory holds little or nothing).
    let remaining = 0;
    for (const raw of this.raw) if (raw) remaining += raw.length / ENTRY;
    let capacity = 1024;
    while (remaining * 2 > capacity) capacity *= 2;
    this.rebuild(capacity);
  }

  /**
   * Packs removed from the repository: out of memory and of the disk cache (after any move
   * under way, so that a pack being moved there is removed too). A failure fails the sync: a
   * removed pack must not be found again.
   */
  private async dropAll(packs: string[]): Promise<void> {
    if (packs.length === 0) return;
    this.forget(packs.filter((p) => this.packNo.has(p)));
    await this.storeOp(async () => {
      const stored = this.store;
      const there = stored ? packs.filter((p) => stored.packs.has(p)) : [];
      if (stored && there.length) await stored.remove(there);
    });
  }

  /**
   * Bring the index up to date with the storage target (one listing, plus a get per new index);
   * with `maxAgeMs`, only when it was last brought up to date longer ago than that.
   */
  sync(maxAgeMs?: number): Promise<void> {
    if (maxAgeMs !== undefined && this.syncing === null && Date.now() - this.syncedAt < maxAgeMs) return Promise.resolve();
    this.syncing ??= this.load().finally(() => {
      this.syncing = null;
      this.syncedAt = Date.now();
    });
    return this.syncing;
  }

  /** Index blobs fetched ahead (`prefetchPackIndexes`), not yet decoded. */
  private fetched: Map<string, Promise<Buffer>> | null = null;
  private fetching: Promise<Map<string, Promise<Buffer>>> | null = null;

  /** Use index blobs fetched before the keys were known (the next `sync` decodes them). */
  adopt(fetching: Promise<Map<string, Promise<Buffer>>>): void {
    this.fetching = fetching.catch(() => new Map());
  }

  private async load(): Promise<void> {
    if (this.fetching) {
      this.fetched = await this.fetching;
      this.fetching = null;
    }
    // A disk cache left by an earlier run is used from the start (only new packs are read).
    if (!this.store && this.options.cacheDir && this.options.repositoryId && PackIndexStore.exists(this.options.cacheDir, this.options.repositoryId)) {
      await this.moveToStore().catch(() => undefined); // when it cannot be opened, the index stays in memory
    }
    const listed = new Set((await this.storage.list(keys.packIndexPrefix)).map((k) => k.slice(keys.packIndexPrefix.length)));
    const known = [...this.packNo.keys(), ...(this.store?.packs.keys() ?? [])];
    await this.dropAll(known.filter((pack) => !listed.has(pack)));
    for (const key of [...this.damaged.keys()]) if (!listed.has(key)) this.damaged.delete(key);
    const fresh = [...listed].filter((p) => !this.packNo.has(p) && !this.store?.packs.has(p));
    // Once the disk cache is in use, packs read go there in batches of up to `memoryChunks`
    // chunks, not through memory's table first (a copy, an insertion and a removal each).
    let batch: Array<{ pack: string; raw: Buffer }> = [];
    let batchChunks = 0;
    const toStore = async (all: boolean) => {
      if (batch.length === 0 || (!all && batchChunks < this.memoryChunks)) return;
      const taking = batch;
      batch = [];
      batchChunks = 0;
      try {
        await this.storeOp(() => this.store!.add(taking));
      } catch (error) {
        this.storeFailure ??= error as Error;
        debug('pack index: adding packs to the cache failed, they stay in memory: %s', (error as Error).message);
        for (const { pack, raw } of taking) this.addRaw(pack, raw);
      }
    };
    let next = 0;
    const lane = async () => {
      while (next < fresh.length) {
        const pack = fresh[next++];
        const key = keys.packIndex(pack);
        try {
          const ahead = this.fetched?.get(pack);
          this.fetched?.delete(pack);
          const blob = ahead ? await ahead.catch(() => this.storage.get(key)) : await this.storage.get(key);
          const raw = packIndexEntries(this.codec.open(key, blob), key);
          this.damaged.delete(pack);
          if (this.store && this.storeFailure === null) {
            batch.push({ pack, raw });
            batchChunks += raw.length / ENTRY;
            await toStore(false);
            continue;
          }
          this.addRaw(pack, raw);
          // Loading a large repository: packs move to the disk cache as memory fills.
          if (this.overBudget && this.chunks > this.memoryChunks) await this.moveToStore().catch(() => undefined);
        } catch (error) {
          if (error instanceof NotFoundError) continue; // removed meanwhile (gc)
          debug('pack index %s cannot be read: %s', key, (error as Error).message);
          this.damaged.set(pack, (error as Error).message);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, fresh.length) }, lane));
    await toStore(true);
    if (fresh.length && this.overBudget) await this.moveToStore().catch(() => undefined);
    if (fresh.length) debug('pack index: %d packs, %d chunks (%d loaded now)', this.packNo.size, this.chunks, fresh.length);
  }
}

/**
 * Start fetching stored pack indexes (the blobs, not decoded) while the repository derives its
 * keys from the passphrase; handed to `PackIndex.adopt`. At most `limit` of them: a large
 * repository has one index per pack, and fetching them all at once would hold every blob in
 * memory together and put thousands of requests on the storage target at the same time (the
 * rest are fetched by `sync`, eight at a time, and decoded as they come).
 */
export async function prefetchPackIndexes(storage: RetryingStorage, limit = 256): Promise<Map<string, Promise<Buffer>>> {
  const fetched = new Map<string, Promise<Buffer>>();
  for (const key of (await storage.list(keys.packIndexPrefix)).slice(0, limit)) {
    const blob = storage.get(key);
    blob.catch(() => undefined);
    fetched.set(key.slice(keys.packIndexPrefix.length), blob);
  }
  return fetched;
}

/**
 * Collects sealed chunk blobs into packs and stores them: pack object first, then its index, then
 * the chunks become visible in the `PackIndex`. At most `maxInFlight` packs are being stored at once
 * (`add` waits: back-pressure). `finish` stores the last, partly filled pack and returns once every
 * pack of this builder is durable; the first failure is rethrown by `add` and `finish`.
 */
export class PackBuilder {
  /** The pack being filled: blobs are copied in as they come (buffers are reused, see `spare`). */
  private buffer: Buffer | null = null;
  /** Pack buffers whose store finished, to fill again (no new large allocation per pack). */
  private readonly spare: Buffer[] = [];
  private entries: PackEntry[] = [];
  private size = 0;
  /** Chunks in the pack being filled or being stored (not yet in the index). */
  private readonly pendingIds = new Set<string>();
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown = null;
  /** Settles once the pack being filled is durable with its index (or failed). */
  private current: { promise: Promise<void>; resolve(): void; reject(e: unknown): void } | null = null;
  /** Bytes of packs stored by this builder. */
  bytesStored = 0;
  packsStored = 0;

  constructor(
    private readonly storage: RetryingStorage,
    private readonly codec: BlobCodec,
    private readonly index: PackIndex,
    private readonly packSize = DEFAULT_PACK_SIZE,
    private readonly maxInFlight = 2,
    /**
     * Chunks being stored by any builder of this process -> settles when durable (shared, so that
     * restore points written at once store a chunk once: the other one waits for it).
     */
    private readonly pending: Map<string, Promise<void>> = new Map(),
  ) {}

  /** True when this builder already holds the chunk (so it need not be added again). */
  holds(id: string): boolean {
    return this.pendingIds.has(id);
  }

  /**
   * Back-pressure: resolves once fewer than maxInFlight packs are being stored, so memory stays
   * bounded however slow the storage target is. Call it before deciding whether a chunk is known
   * and adding it (`add` registers the chunk at once, without waiting).
   */
  async ready(): Promise<void> {
    while (this.inFlight.size >= this.maxInFlight) await Promise.race(this.inFlight);
    this.check();
  }

  /** Take a chunk's blob (copied into the pack being filled); closes and stores the pack when full. */
  add(id: string, blob: Buffer): void {
    this.check();
    if (this.pendingIds.has(id)) return;
    this.pendingIds.add(id);
    if (!this.current) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      promise.catch(() => undefined);
      this.current = { promise, resolve, reject };
    }
    if (!this.pending.has(id)) this.pending.set(id, this.current.promise);
    this.entries.push({ id, offset: this.size, length: blob.length });
    this.reserve(this.size + blob.length);
    blob.copy(this.buffer!, this.size);
    this.size += blob.length;
    if (this.size >= this.packSize) this.flush();
  }

  /** Wait for the packs being stored, store nothing more (after a failure elsewhere). */
  async settle(): Promise<void> {
    const abandoned = new StillpointError('the backup stopped before this chunk was stored');
    for (const e of this.entries) this.release(e.id, this.current?.promise);
    this.current?.reject(abandoned);
    this.current = null;
    this.buffer = null;
    this.entries = [];
    this.size = 0;
    await Promise.all(this.inFlight);
  }

  async finish(): Promise<void> {
    if (this.entries.length > 0) this.flush();
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
    this.check();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** Close the pack being filled (at once, so that it neither grows nor is stored twice) and store it. */
  private flush(): void {
    const buffer = this.buffer!;
    const size = this.size;
    const entries = this.entries;
    const done = this.current!;
    this.buffer = null;
    this.entries = [];
    this.size = 0;
    this.current = null;
    const job = this.store(buffer.subarray(0, size), entries).then(
      () => {
        if (this.spare.length < this.maxInFlight) this.spare.push(buffer);
        for (const e of entries) this.release(e.id, done.promise);
        done.resolve();
      },
      (error) => {
        this.failure ??= error;
        for (const e of entries) this.release(e.id, done.promise);
        done.reject(error);
      },
    );
    this.inFlight.add(job);
    void job.finally(() => this.inFlight.delete(job));
  }

  /** Room for `needed` bytes in the pack being filled. */
  private reserve(needed: number): void {
    if (this.buffer && this.buffer.length >= needed) return;
    // A pack is closed once it reaches packSize; a chunk blob is at most ~chunk size, so a buffer
    // of 1.25 x packSize (or what is needed) rarely grows.
    const capacity = Math.max(needed, Math.ceil(this.packSize * 1.25));
    let next = this.buffer === null ? this.spare.pop() : undefined;
    // Page-aligned: a local target writes it to the device without copying it first.
    if (!next || next.length < needed) next = allocAligned(capacity);
    if (this.buffer) this.buffer.copy(next, 0, 0, this.size);
    this.buffer = next;
  }

  private release(id: string, promise: Promise<void> | undefined): void {
    if (this.pending.get(id) === promise) this.pending.delete(id);
  }

  private async store(pack: Buffer, entries: PackEntry[]): Promise<void> {
    const id = newPackId();
    await this.storage.put(keys.pack(id), pack);
    const indexKey = keys.packIndex(id);
    const sealed = this.codec.seal(indexKey, encodePackIndex(entries));
    await this.storage.put(indexKey, sealed);
    this.index.add(id, entries);
    for (const e of entries) this.pendingIds.delete(e.id);
    this.bytesStored += pack.length + sealed.length;
    this.packsStored++;
  }
}

/** A chunk's blob read out of its pack; a pack that is gone or too short is reported as missing. */
export async function readPackedBlob(storage: RetryingStorage, chunk: string, at: ChunkLocation): Promise<Buffer> {
  const key = keys.pack(at.pack);
  let blob: Buffer;
  try {
    blob = await storage.getRange(key, at.offset, at.length);
  } catch (error) {
    if (error instanceof NotFoundError) {
      throw new CorruptImageError(`chunk ${chunk} is missing from the repository: its pack ${key} is missing`, { where: key, hint: 'run `stillpoint verify` to list every damaged restore point', cause: error });
    }
    throw error;
  }
  if (blob.length !== at.length) {
    throw new CorruptImageError(`chunk ${chunk} is damaged: pack ${key} is truncated (${blob.length} of ${at.length} bytes at offset ${at.offset})`, { where: key, hint: 'run `stillpoint verify --deep`' });
  }
  return blob;
}

export function packError(chunk: string, at: ChunkLocation, error: unknown): Error {
  const e = error as Error;
  if (e instanceof CorruptImageError) {
    return new CorruptImageError(`chunk ${chunk} in pack ${keys.pack(at.pack)} (offset ${at.offset}) is damaged: ${e.message}`, { where: keys.pack(at.pack), hint: 'run `stillpoint verify --deep` to list every damaged restore point', cause: e });
  }
  return e instanceof Error ? e : new StillpointError(String(e));
}
