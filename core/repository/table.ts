import { CorruptImageError, StillpointError } from '../errors.ts';
import type { ChunkNamer } from './codec.ts';
import { isZeroEntry, keys, newTablePage, parseTablePage, setTableEntry, TABLE_HEADER, tableEntry, tablePageIds, type DiskRecord } from './format.ts';

/**
 * A disk's chunk table, read a page at a time. A table names one chunk per `chunkSize` bytes of the
 * disk; it is stored in pages of `pageChunks` entries (docs/repository-format.md, "Chunk tables"),
 * so that a backup, a restore, verify and gc hold a few pages, not the table of the whole disk
 * (32 bytes a chunk: 256 MiB for a 2 TiB disk). A table written before pages existed is one page.
 *
 * `page`/`entry` load what they need; `loaded` answers only from pages already in memory, for the
 * hot paths that have awaited `page` (or `ensure`) just before. At most `keep` pages stay loaded.
 */
export class ChunkTableReader {
  readonly pageIds: string[];
  readonly pageChunks: number;
  private readonly pages = new Map<number, Promise<Buffer>>();
  private readonly ready = new Map<number, Buffer>();

  constructor(
    readonly record: DiskRecord,
    private readonly fetch: (key: string) => Promise<Buffer>,
    private readonly nameChunk: ChunkNamer,
    private readonly keep = 4,
  ) {
    this.pageIds = tablePageIds(record);
    this.pageChunks = record.tablePages ? record.tablePageChunks! : Math.max(1, record.chunkCount);
  }

  pageOf(index: number): number {
    return Math.floor(index / this.pageChunks);
  }

  /** One past the last entry of the page that holds entry `index`. */
  pageEnd(index: number): number {
    return Math.min(this.record.chunkCount, (this.pageOf(index) + 1) * this.pageChunks);
  }

  /** Page `k`: its 24-byte header, then its entries (entry `index` at `index - k * pageChunks`). */
  page(k: number): Promise<Buffer> {
    let p = this.pages.get(k);
    if (p) {
      // Most recently used last (Map order), so the oldest page is let go first.
      this.pages.delete(k);
      this.pages.set(k, p);
      return p;
    }
    p = this.load(k);
    this.pages.set(k, p);
    p.then((page) => {
      if (this.pages.get(k) === p) this.ready.set(k, page);
    }, () => this.pages.delete(k));
    while (this.pages.size > this.keep) {
      const oldest = this.pages.keys().next().value!;
      this.pages.delete(oldest);
      this.ready.delete(oldest);
    }
    return p;
  }

  /** Load the page that holds entry `index` (and keep it among the loaded ones). */
  async ensure(index: number): Promise<void> {
    await this.page(this.pageOf(index));
  }

  async entry(index: number): Promise<string | null> {
    const k = this.pageOf(index);
    return tableEntry(await this.page(k), index - k * this.pageChunks);
  }

  /** Entry `index` if its page is loaded, else undefined. */
  loaded(index: number): string | null | undefined {
    const k = this.pageOf(index);
    const page = this.ready.get(k);
    return page ? tableEntry(page, index - k * this.pageChunks) : undefined;
  }

  /** Entry `index`, whose page must be loaded (`ensure`). */
  at(index: number): string | null {
    const e = this.loaded(index);
    if (e === undefined) throw new StillpointError(`chunk table page of entry ${index} is not loaded`, { where: `disk ${this.record.id}` });
    return e;
  }

  private async load(k: number): Promise<Buffer> {
    const id = this.pageIds[k];
    if (id === undefined) throw new StillpointError(`chunk table has no page ${k}`, { where: `disk ${this.record.id}` });
    const key = keys.table(id);
    const plain = await this.fetch(key);
    if (this.nameChunk(plain) !== id) {
      throw new CorruptImageError('chunk table content does not match its name', { where: key, hint: 'run `stillpoint verify --deep`' });
    }
    let parsed;
    try {
      parsed = parseTablePage(plain, key);
    } catch (error) {
      throw new CorruptImageError((error as Error).message, { where: key, hint: 'run `stillpoint verify --deep`' });
    }
    const r = this.record;
    const first = k * this.pageChunks;
    const count = Math.min(this.pageChunks, r.chunkCount - first);
    if (parsed.chunkCount !== r.chunkCount || parsed.virtualSize !== r.virtualSize || parsed.chunkSize !== r.chunkSize || parsed.firstIndex !== first || parsed.count !== count) {
      throw new CorruptImageError(`chunk table does not match disk ${r.id} (page ${k})`, { where: key });
    }
    return plain;
  }
}

/**
 * Builds a disk's chunk table page by page while the disk is stored. Entries are `set` as chunks
 * are planned and stored; once the backup has moved past a page (`advance`, called in disk order),
 * the page is completed, stored and let go, so that at most a few pages are in memory however large
 * the disk. Entries never set come from `base` (an incremental starts from the previous restore
 * point's table) or are zero chunks. Zero entries are kept as runs until their page is completed:
 * the planner, which runs ahead of the chunks being stored, may name millions of them (a hole).
 */
export class ChunkTableWriter {
  /** Pages with chunk names set (by stored chunks, which come in disk order: a page or two). */
  private readonly open = new Map<number, Buffer>();
  /** Zero entries set per page, as [from, to) runs of page-local indexes (only with a base). */
  private readonly zeros = new Map<number, Array<[number, number]>>();
  private readonly ids: string[] = [];
  /** The next page to complete. */
  private next = 0;
  private closing: Promise<void> = Promise.resolve();
  private failure: unknown = null;
  dataChunks = 0;
  readonly pageCount: number;
  private readonly chunkCount: number;

  constructor(
    private readonly chunkSize: number,
    private readonly virtualSize: number,
    readonly pageChunks: number,
    private readonly base: ChunkTableReader | null,
    /** Store a completed page (header and entries): resolves to its name once it is durable. */
    private readonly store: (page: Buffer) => Promise<string>,
  ) {
    this.chunkCount = Math.ceil(virtualSize / chunkSize);
    this.pageCount = Math.max(1, Math.ceil(this.chunkCount / pageChunks));
  }

  set(index: number, id: string | null): void {
    const k = Math.floor(index / this.pageChunks);
    if (k < this.next) throw new StillpointError(`chunk table page ${k} is already stored (entry ${index} came too late)`);
    const local = index - k * this.pageChunks;
    if (id === null) {
      // Without a base every entry not named is a zero chunk already.
      if (!this.base) return;
      let runs = this.zeros.get(k);
      if (!runs) this.zeros.set(k, (runs = []));
      const last = runs.at(-1);
      if (last && last[1] === local) last[1]++;
      else runs.push([local, local + 1]);
      return;
    }
    let page = this.open.get(k);
    if (!page) {
      const first = k * this.pageChunks;
      page = newTablePage(this.chunkSize, this.virtualSize, first, Math.min(this.pageChunks, this.chunkCount - first));
      this.open.set(k, page);
    }
    setTableEntry(page, local, id);
  }

  /** Every entry before `index` is set: complete and store the pages before its page. */
  advance(index: number): void {
    const k = Math.floor(index / this.pageChunks);
    while (this.next < k) this.complete(this.next++);
  }

  /** Complete and store the remaining pages; resolves once every page is durable. */
  async finish(): Promise<string[]> {
    while (this.next < this.pageCount) this.complete(this.next++);
    await this.closing;
    if (this.failure) throw this.failure;
    return this.ids;
  }

  /** Wait for the pages being stored (after a failure elsewhere), without throwing. */
  async settle(): Promise<void> {
    await this.closing;
  }

  private complete(k: number): void {
    const named = this.open.get(k);
    const zeros = (this.zeros.get(k) ?? []).sort((a, b) => a[0] - b[0]);
    this.open.delete(k);
    this.zeros.delete(k);
    this.closing = this.closing.then(async () => {
      if (this.failure) return;
      try {
        const first = k * this.pageChunks;
        const count = Math.min(this.pageChunks, this.chunkCount - first);
        const page = named ?? newTablePage(this.chunkSize, this.virtualSize, first, count);
        if (this.base) await this.fillFromBase(page, first, count, zeros);
        if (named || this.base) {
          for (let i = 0; i < count; i++) if (!isZeroEntry(page, i)) this.dataChunks++;
        }
        this.ids[k] = await this.store(page);
      } catch (error) {
        this.failure ??= error;
      }
    });
  }

  /** Copy the base's entries into every entry of `page` not set (neither named nor in `zeros`). */
  private async fillFromBase(page: Buffer, first: number, count: number, zeros: Array<[number, number]>): Promise<void> {
    const b = this.base!;
    const isSet = (i: number) => !isZeroEntry(page, i);
    let z = 0;
    for (let i = 0; i < count; ) {
      while (z < zeros.length && zeros[z][1] <= i) z++;
      if (z < zeros.length && zeros[z][0] <= i) {
        i = zeros[z][1];
        continue;
      }
      if (isSet(i)) {
        i++;
        continue;
      }
      // A run of entries not set, within one page of the base and before the next zero run.
      const bk = b.pageOf(first + i);
      const from = await b.page(bk);
      const baseFirst = bk * b.pageChunks;
      const stop = Math.min(count, b.pageEnd(first + i) - first, z < zeros.length ? zeros[z][0] : count);
      let j = i + 1;
      while (j < stop && !isSet(j)) j++;
      from.copy(page, TABLE_HEADER + i * 32, TABLE_HEADER + (first + i - baseFirst) * 32, TABLE_HEADER + (first + j - baseFirst) * 32);
      i = j;
    }
  }
}
