/**
 * The pack index beyond what a process keeps in memory: two files in a local cache directory,
 * `<cacheDir>/<repository id>/pack-index/`, kept between runs, read and written with pread and
 * pwrite (no memory map: the pages a lookup reads stay in the page cache, not in the process).
 *
 * - `packs`: every pack taken in, one record after the other: state (1 byte: "P" held, "X"
 *   removed), entry count (u32 LE), name length (1 byte), name, and the pack's entries as its
 *   index lists them (32-byte chunk name, offset u32 LE, length u32 LE). A pack's number is its
 *   place in this file; only the names, numbers and places are held in memory.
 * - `chunks`: a hash table on disk. A 4 KiB header (magic "SPX", version, bucket bits, record
 *   count, a dirty flag, the repository id), then 2^bits buckets of 4 KiB, each holding up to 93
 *   records of 44 bytes (chunk name, pack number, offset, length) after a count (u16 LE) and an
 *   overflow flag. A chunk's bucket is the first `bits` bits of its name (names are hashes, so
 *   evenly spread); a full bucket sends records on to the next, and says so with its flag, so a
 *   lookup reads one bucket, rarely two. Beyond 70% full the table is rewritten twice as large.
 *   A chunk held by several packs has a record for each; a lookup takes the pack taken in last.
 *
 * It is a cache of the repository's pack indexes: `PackIndex.sync` adds the packs it lists and
 * removes those it no longer lists, so a cache left by a repository that changed elsewhere (gc
 * on another host, a copy restored from tape) is corrected before it is used. The dirty flag is
 * set before the first change of a process and cleared once both files are synced at close: a
 * cache found dirty (a process that crashed while changing it) is emptied and built again from
 * the repository. One process at a time uses it (a `lock` file with its pid); another process of
 * the same repository gets a private cache of its own, removed when it closes (or, after a crash,
 * by the next process that opens the directory).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, statSync, readFileSync, readSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import createDebug from 'debug';
import { StillpointError } from '../errors.ts';
import { processAlive } from '../util/durable.ts';

const debug = createDebug('stillpoint:repository');

const ENTRY = 40;
const RECORD = 44;
const BUCKET = 4096;
const PER_BUCKET = Math.floor((BUCKET - 4) / RECORD); // 93
const HEADER = 4096;
const MAGIC = Buffer.from('SPX', 'ascii');
const VERSION = 1;
const MIN_BITS = 8;
const MAX_LOAD = 0.7;
/** Records placed between two turns of the event loop (a large move must not stall the process). */
const YIELD_EVERY = 8192;
const HELD = 0x50; // "P"
const REMOVED = 0x58; // "X"

export interface StoredLocation {
  pack: string;
  offset: number;
  length: number;
}

interface StoredPack {
  no: number;
  /** Where its entries are in `packs`. */
  at: number;
  count: number;
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
/** What an empty table is written with (never written to). */
const zeros = Buffer.alloc(2 ** 20);

export class PackIndexStore {
  /** The packs held, by name. */
  readonly packs = new Map<string, StoredPack>();
  /** Entries of those packs (a chunk held by two packs counts twice). */
  entryCount = 0;
  /** Entries of removed packs, still in the log. */
  private deadEntries = 0;
  /** Pack number -> name (null: removed). */
  private readonly names: Array<string | null> = [];
  private bits = MIN_BITS;
  private records = 0;
  private dirty = false;
  /** A change failed half done: the cache stays marked dirty. */
  private failed = false;
  private packsEnd = 0;
  private readonly bucket = Buffer.alloc(BUCKET);

  private constructor(
    readonly path: string,
    private chunksFd: number,
    private packsFd: number,
    private readonly repositoryId: string,
    private readonly temporary: boolean,
  ) {}

  /** Whether `cacheDir` holds this repository's pack index (from an earlier run). */
  static exists(cacheDir: string, repositoryId: string): boolean {
    return existsSync(join(cacheDir, repositoryId, 'pack-index', 'chunks'));
  }

  /** Open (or create) the repository's pack index in `cacheDir`, or a private one when another process uses it. */
  static async open(cacheDir: string, repositoryId: string): Promise<PackIndexStore> {
    const base = join(cacheDir, repositoryId);
    await mkdir(base, { recursive: true, mode: 0o700 });
    await removeLeftovers(base);
    let path = join(base, 'pack-index');
    let temporary = false;
    if (!takeLock(path)) {
      debug('pack index cache %s is in use by another process: using a private one', path);
      path = join(base, `pack-index.${process.pid}.${randomBytes(4).toString('hex')}`);
      temporary = true;
      if (!takeLock(path)) throw new StillpointError(`the pack index cache ${path} is locked`, { where: path });
    }
    try {
      return PackIndexStore.openFiles(path, repositoryId, temporary);
    } catch (error) {
      rmSync(join(path, 'lock'), { force: true });
      throw new StillpointError(`the pack index cache ${path} cannot be opened: ${(error as Error).message}`, { where: path, cause: error, hint: 'delete that directory: it is built again from the repository' });
    }
  }

  private static openFiles(path: string, repositoryId: string, temporary: boolean): PackIndexStore {
    const chunksPath = join(path, 'chunks');
    const packsPath = join(path, 'packs');
    let header: Buffer | null = null;
    if (existsSync(chunksPath)) {
      header = Buffer.alloc(HEADER);
      const fd = openSync(chunksPath, 'r');
      try {
        readSync(fd, header, 0, HEADER, 0);
      } finally {
        closeSync(fd);
      }
      const id = header.toString('utf8', 32, 32 + header[31]);
      const why = !header.subarray(0, 3).equals(MAGIC) || header[3] !== VERSION ? 'another format'
        : header[30] !== 0 ? 'a process stopped while changing it'
          : id !== repositoryId ? `repository ${id}`
            : statSync(chunksPath).size !== HEADER + 2 ** header[4] * BUCKET || !existsSync(packsPath) ? 'a file of it is not whole' : null;
      if (why) {
        debug('pack index cache %s is emptied (%s): it is built again', path, why);
        header = null;
      }
    }
    if (!header) {
      rmSync(chunksPath, { force: true });
      rmSync(packsPath, { force: true });
    }
    const store = new PackIndexStore(path, openSync(chunksPath, header ? 'r+' : 'w+', 0o600), openSync(packsPath, header ? 'r+' : 'w+', 0o600), repositoryId, temporary);
    if (header) {
      store.bits = header[4];
      store.records = header.readUInt32LE(8) + header.readUInt32LE(12) * 2 ** 32;
      if (!store.loadPacks()) {
        debug('pack index cache %s is emptied (its pack log is not whole): it is built again', path);
        store.empty();
      }
    } else {
      store.empty();
    }
    debug('pack index cache %s: %d packs, %d entries', path, store.packs.size, store.entryCount);
    return store;
  }

  /** Read the pack log (names, numbers, places); false when it does not end exactly after a record. */
  private loadPacks(): boolean {
    const size = fstatSync(this.packsFd).size;
    const head = Buffer.alloc(6 + 255);
    let at = 0;
    while (at < size) {
      const n = readSync(this.packsFd, head, 0, head.length, at);
      if (n < 6 || n < Math.min(head.length, size - at)) return false;
      const count = head.readUInt32LE(1);
      const name = head.toString('utf8', 6, 6 + head[5]);
      const entriesAt = at + 6 + head[5];
      this.names.push(head[0] === HELD ? name : null);
      if (head[0] === HELD) {
        this.packs.set(name, { no: this.names.length - 1, at: entriesAt, count });
        this.entryCount += count;
      } else {
        this.deadEntries += count;
      }
      at = entriesAt + count * ENTRY;
    }
    this.packsEnd = at;
    return at === size;
  }

  /** Both files emptied, a table of the smallest size. */
  private empty(): void {
    ftruncateSync(this.chunksFd, 0);
    ftruncateSync(this.packsFd, 0);
    this.names.length = 0;
    this.packs.clear();
    this.entryCount = 0;
    this.deadEntries = 0;
    this.packsEnd = 0;
    this.bits = MIN_BITS;
    this.records = 0;
    this.writeEmptyTable(this.chunksFd, MIN_BITS);
    this.writeHeader();
  }

  private writeHeader(): void {
    const h = Buffer.alloc(HEADER);
    MAGIC.copy(h, 0);
    h[3] = VERSION;
    h[4] = this.bits;
    h.writeUInt32LE(this.records % 2 ** 32, 8);
    h.writeUInt32LE(Math.floor(this.records / 2 ** 32), 12);
    h[30] = this.dirty ? 1 : 0;
    const id = Buffer.from(this.repositoryId, 'utf8');
    h[31] = id.length;
    id.copy(h, 32);
    writeSync(this.chunksFd, h, 0, HEADER, 0);
  }

  private writeEmptyTable(fd: number, bits: number): void {
    const total = 2 ** bits * BUCKET;
    for (let at = 0; at < total; at += zeros.length) writeSync(fd, zeros, 0, Math.min(zeros.length, total - at), HEADER + at);
  }

  /** Mark the cache as being changed (durably) before the first change of this process. */
  private touch(): void {
    if (this.dirty) return;
    this.dirty = true;
    this.writeHeader();
    fdatasyncSync(this.chunksFd);
  }

  /**
   * The buckets holding what may be records of the chunk named at `at` in `name`: its own, then
   * the next ones while a bucket says records went on past it. Each is read into `this.bucket`.
   */
  private *chain(name: Buffer, at: number): Generator<[number, Buffer]> {
    const buckets = 2 ** this.bits;
    for (let b = bucketOf(name, at, this.bits), seen = 0; seen < buckets; b = (b + 1) % buckets, seen++) {
      const bucket = this.readBucket(b);
      yield [b, bucket];
      if (bucket[2] === 0) return; // nothing went on past this bucket
    }
  }

  private readBucket(b: number, into: Buffer = this.bucket, fd = this.chunksFd): Buffer {
    if (readSync(fd, into, 0, BUCKET, HEADER + b * BUCKET) !== BUCKET) {
      throw new StillpointError(`the pack index cache is shorter than its header says (bucket ${b})`, { where: this.path, hint: 'delete that directory: it is built again from the repository' });
    }
    return into;
  }

  /** Where the chunk named by the 32 bytes of `name` at `at` is (the pack taken in last that holds it), or undefined. */
  get(name: Buffer, at = 0): StoredLocation | undefined {
    let best = -1;
    let found: StoredLocation | undefined;
    for (const [, bucket] of this.chain(name, at)) {
      const count = bucket.readUInt16LE(0);
      for (let r = 0; r < count; r++) {
        const rec = 4 + r * RECORD;
        if (bucket.compare(name, at, at + 32, rec, rec + 32) !== 0) continue;
        const no = bucket.readUInt32LE(rec + 32);
        if (no > best && this.names[no]) {
          best = no;
          found = { pack: this.names[no]!, offset: bucket.readUInt32LE(rec + 36), length: bucket.readUInt32LE(rec + 40) };
        }
      }
    }
    return found;
  }

  /** A pack's entries as its index lists them (count x 40 bytes), or undefined. */
  entries(pack: string): Buffer | undefined {
    const p = this.packs.get(pack);
    if (!p) return undefined;
    const out = Buffer.alloc(p.count * ENTRY);
    readSync(this.packsFd, out, 0, out.length, p.at);
    return out;
  }

  /** Take in packs (entries in their binary form); a pack already held is left as it is. */
  add(packs: Iterable<{ pack: string; raw: Buffer }>): Promise<void> {
    return this.changing(() => this.addPacks(packs));
  }

  /** Forget packs (removed from the repository): their records go from the table. */
  remove(packs: Iterable<string>): Promise<void> {
    return this.changing(() => this.removePacks(packs));
  }

  /** A change that fails half done leaves the cache marked dirty (`close` does not clear it): the next process builds it again. */
  private async changing(change: () => Promise<void>): Promise<void> {
    try {
      await change();
    } catch (error) {
      this.failed = true;
      throw error;
    }
  }

  private async addPacks(packs: Iterable<{ pack: string; raw: Buffer }>): Promise<void> {
    const fresh = [...packs].filter((p) => !this.packs.has(p.pack));
    if (fresh.length === 0) return;
    const long = fresh.find((p) => Buffer.byteLength(p.pack, 'utf8') > 255);
    if (long) throw new StillpointError(`pack name ${long.pack.slice(0, 40)}... is longer than the pack index cache takes (255 bytes)`, { where: this.path });
    this.touch();
    let total = 0;
    for (const p of fresh) total += p.raw.length / ENTRY;
    while (this.records + total > MAX_LOAD * PER_BUCKET * 2 ** this.bits) await this.rewrite(this.bits + 1, false);
    // Log the packs first: a record never names a pack the log does not have.
    const added: Array<{ no: number; raw: Buffer }> = [];
    for (const { pack, raw } of fresh) {
      const name = Buffer.from(pack, 'utf8');
      const head = Buffer.alloc(6 + name.length);
      head[0] = HELD;
      head.writeUInt32LE(raw.length / ENTRY, 1);
      head[5] = name.length;
      name.copy(head, 6);
      writeSync(this.packsFd, head, 0, head.length, this.packsEnd);
      writeSync(this.packsFd, raw, 0, raw.length, this.packsEnd + head.length);
      const no = this.names.push(pack) - 1;
      this.packs.set(pack, { no, at: this.packsEnd + head.length, count: raw.length / ENTRY });
      this.entryCount += raw.length / ENTRY;
      this.packsEnd += head.length + raw.length;
      added.push({ no, raw });
    }
    await this.place(recordsOf(added), this.chunksFd, this.bits);
    this.records += total;
    this.writeHeader();
  }

  /**
   * Place records (44 bytes each, one after the other in `records`) into the table in `fd` with
   * `bits` bucket bits: in the order of their buckets, each bucket read and written once (a few
   * more when a full one sends records on).
   */
  private async place(records: Buffer, fd: number, bits: number): Promise<void> {
    const n = records.length / RECORD;
    const buckets = 2 ** bits;
    const home = new Uint32Array(n);
    for (let i = 0; i < n; i++) home[i] = bucketOf(records, i * RECORD, bits);
    const order = Uint32Array.from({ length: n }, (_, i) => i).sort((x, y) => home[x] - home[y]);
    // The buckets being filled (those at or after the current one), their buffers reused.
    const cache = new Map<number, Buffer>();
    const spare: Buffer[] = [];
    const load = (b: number) => {
      let buf = cache.get(b);
      if (!buf) cache.set(b, (buf = this.readBucket(b, spare.pop() ?? Buffer.alloc(BUCKET), fd)));
      return buf;
    };
    const flushBelow = (limit: number) => {
      for (const [b, buf] of cache) {
        if (b >= limit) continue;
        writeSync(fd, buf, 0, BUCKET, HEADER + b * BUCKET);
        cache.delete(b);
        spare.push(buf);
      }
    };
    for (let k = 0; k < n; k++) {
      if (k % YIELD_EVERY === YIELD_EVERY - 1) await turn();
      const i = order[k];
      const start = home[i];
      flushBelow(start);
      for (let b = start, seen = 0; ; b = (b + 1) % buckets, seen++) {
        if (seen === buckets) throw new StillpointError('the pack index cache is full', { where: this.path });
        const buf = load(b);
        const count = buf.readUInt16LE(0);
        if (count < PER_BUCKET) {
          records.copy(buf, 4 + count * RECORD, i * RECORD, (i + 1) * RECORD);
          buf.writeUInt16LE(count + 1, 0);
          break;
        }
        buf[2] = 1; // full: this record goes on, and a lookup must too
      }
    }
    flushBelow(Infinity);
  }

  /**
   * Rewrite the table with `bits` bucket bits, held packs only; with `compact`, the pack log too,
   * without the removed packs (pack numbers change: the records are numbered anew).
   */
  private async rewrite(bits: number, compact: boolean): Promise<void> {
    const tmp = join(this.path, 'chunks.new');
    const tmpPacks = join(this.path, 'packs.new');
    const fd = openSync(tmp, 'w+', 0o600);
    let packsFd: number | null = null;
    const renumber = new Int32Array(this.names.length).map((_, no) => (this.names[no] === null ? -1 : no));
    const held: Array<[string, StoredPack]> = [];
    let packsEnd = 0;
    try {
      if (compact) {
        packsFd = openSync(tmpPacks, 'w+', 0o600);
        let no = 0;
        for (const [pack, p] of [...this.packs].sort((a, b) => a[1].no - b[1].no)) {
          const name = Buffer.from(pack, 'utf8');
          const record = Buffer.alloc(6 + name.length + p.count * ENTRY);
          readSync(this.packsFd, record, 0, record.length, p.at - 6 - name.length);
          writeSync(packsFd, record, 0, record.length, packsEnd);
          renumber[p.no] = no;
          held.push([pack, { no: no++, at: packsEnd + 6 + name.length, count: p.count }]);
          packsEnd += record.length;
        }
        fdatasyncSync(packsFd);
      }
      this.writeEmptyTable(fd, bits);
      const step = 256;
      const buckets = 2 ** this.bits;
      const chunk = Buffer.alloc(step * BUCKET);
      const moving = Buffer.alloc(step * PER_BUCKET * RECORD);
      for (let from = 0; from < buckets; from += step) {
        const n = Math.min(step, buckets - from);
        readSync(this.chunksFd, chunk, 0, n * BUCKET, HEADER + from * BUCKET);
        let m = 0;
        for (let k = 0; k < n; k++) {
          const base = k * BUCKET;
          const count = chunk.readUInt16LE(base);
          for (let r = 0; r < count; r++) {
            const rec = base + 4 + r * RECORD;
            const no = renumber[chunk.readUInt32LE(rec + 32)];
            if (no < 0) continue;
            chunk.copy(moving, RECORD * m, rec, rec + RECORD);
            moving.writeUInt32LE(no, RECORD * m++ + 32);
          }
        }
        await this.place(moving.subarray(0, m * RECORD), fd, bits);
      }
      // The header goes with the new table (dirty: this process is changing it).
      const h = Buffer.alloc(HEADER);
      readSync(this.chunksFd, h, 0, HEADER, 0);
      h[4] = bits;
      writeSync(fd, h, 0, HEADER, 0);
      fdatasyncSync(fd);
    } catch (error) {
      closeSync(fd);
      rmSync(tmp, { force: true });
      if (packsFd !== null) {
        closeSync(packsFd);
        rmSync(tmpPacks, { force: true });
      }
      throw error;
    }
    // A crash between the two renames leaves the cache marked dirty: it is then built again.
    closeSync(this.chunksFd);
    renameSync(tmp, join(this.path, 'chunks'));
    this.chunksFd = fd;
    this.bits = bits;
    if (packsFd !== null) {
      closeSync(this.packsFd);
      renameSync(tmpPacks, join(this.path, 'packs'));
      this.packsFd = packsFd;
      this.packsEnd = packsEnd;
      this.names.length = 0;
      this.packs.clear();
      for (const [pack, p] of held) {
        this.names.push(pack);
        this.packs.set(pack, p);
      }
      this.deadEntries = 0;
    }
    debug('pack index cache %s: %d buckets%s', this.path, 2 ** bits, compact ? ', removed packs left out' : '');
  }

  private async removePacks(packs: Iterable<string>): Promise<void> {
    const gone = [...packs].filter((p) => this.packs.has(p));
    if (gone.length === 0) return;
    this.touch();
    const state = Buffer.from([REMOVED]);
    let removed = 0;
    for (const pack of gone) {
      const p = this.packs.get(pack)!;
      const raw = this.entries(pack)!;
      // Its records: found from each of its chunks' buckets on.
      for (let at = 0; at < raw.length; at += ENTRY) {
        if ((at / ENTRY) % YIELD_EVERY === YIELD_EVERY - 1) await turn();
        for (const [b, bucket] of this.chain(raw, at)) {
          let count = bucket.readUInt16LE(0);
          let changed = false;
          for (let r = 0; r < count; r++) {
            const rec = 4 + r * RECORD;
            if (bucket.readUInt32LE(rec + 32) !== p.no || bucket.compare(raw, at, at + 32, rec, rec + 32) !== 0) continue;
            // The last record takes its place (the overflow flag stays: records may lie beyond).
            bucket.copy(bucket, rec, 4 + (count - 1) * RECORD, 4 + count * RECORD);
            count--;
            r--;
            changed = true;
            removed++;
          }
          if (changed) {
            bucket.writeUInt16LE(count, 0);
            writeSync(this.chunksFd, bucket, 0, BUCKET, HEADER + b * BUCKET);
          }
        }
      }
      writeSync(this.packsFd, state, 0, 1, p.at - 6 - Buffer.byteLength(pack, 'utf8'));
      this.names[p.no] = null;
      this.packs.delete(pack);
      this.entryCount -= p.count;
      this.deadEntries += p.count;
    }
    this.records -= removed;
    this.writeHeader();
    // The log keeps removed packs' entries (they are how their records are found): once they
    // outweigh the held ones, it is written again without them.
    if (this.deadEntries > Math.max(this.entryCount, 100_000)) await this.rewrite(this.bits, true);
  }

  /** Sync both files, clear the dirty flag, let go of the lock (a private cache is removed). */
  async close(): Promise<void> {
    if (this.dirty && !this.failed) {
      fdatasyncSync(this.packsFd);
      fdatasyncSync(this.chunksFd);
      this.dirty = false;
      this.writeHeader();
      fdatasyncSync(this.chunksFd);
    }
    closeSync(this.chunksFd);
    closeSync(this.packsFd);
    if (this.temporary) await rm(this.path, { recursive: true, force: true });
    else rmSync(join(this.path, 'lock'), { force: true });
  }
}

/** A chunk's bucket in a table of 2^bits: the first `bits` bits of its name (at `at` in `name`). */
function bucketOf(name: Buffer, at: number, bits: number): number {
  return Math.floor(name.readUInt32BE(at) / 2 ** (32 - bits));
}

/** The records (44 bytes each, one after the other) of packs' entries, with their pack numbers. */
function recordsOf(packs: Array<{ no: number; raw: Buffer }>): Buffer {
  let total = 0;
  for (const p of packs) total += p.raw.length / ENTRY;
  const out = Buffer.allocUnsafe(total * RECORD);
  let r = 0;
  for (const { no, raw } of packs) {
    for (let at = 0; at < raw.length; at += ENTRY, r += RECORD) {
      raw.copy(out, r, at, at + 32);
      out.writeUInt32LE(no, r + 32);
      raw.copy(out, r + 36, at + 32, at + 40);
    }
  }
  return out;
}

/** Create `dir/lock` naming this process; false when a live process holds it (a dead one's is taken over). */
function takeLock(dir: string): boolean {
  rmSyncIfStale(dir);
  try {
    writeFileSync(join(dir, 'lock'), String(process.pid), { flag: 'wx', mode: 0o600 });
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      mkdirSync(dir, { mode: 0o700, recursive: true });
      return takeLock(dir);
    }
    if (code === 'EEXIST') return false;
    throw error;
  }
}

/** Remove `dir/lock` when the process it names is gone. */
function rmSyncIfStale(dir: string): void {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dir, 'lock'), 'utf8'));
  } catch {
    return;
  }
  if (!(pid > 0) || !processAlive(pid)) rmSync(join(dir, 'lock'), { force: true });
}

/** Private caches of processes that are gone. */
async function removeLeftovers(base: string): Promise<void> {
  for (const name of await readdir(base)) {
    const m = /^pack-index\.(\d+)\.[0-9a-f]+$/.exec(name);
    if (m && !processAlive(Number(m[1]))) await rm(join(base, name), { recursive: true, force: true });
  }
}
