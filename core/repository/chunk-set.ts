import { isZeroEntry, TABLE_HEADER, tableEntryCount } from './format.ts';

const NAME = 32;

/**
 * A set of chunk names (32-byte hashes), for the passes that touch every chunk of a repository
 * (garbage collection's mark, verify). A repository of a few TiB references millions of chunks:
 * as a `Set` of hex strings each name took about 100 bytes (measured with a million); here 40 to
 * 80, depending on where the last doubling left the buffers: the name stored densely, plus
 * two to four 4-byte slots of an open-addressing table kept at most half full, keyed by the
 * name's first bytes (names are hashes, so evenly spread).
 */
export class ChunkNameSet implements Iterable<string> {
  private names = Buffer.alloc(NAME * 1024);
  /** Slot -> name number (-1: empty). */
  private slots = new Int32Array(2048).fill(-1);
  private count = 0;
  private readonly probe = Buffer.alloc(NAME);

  /** How many names are in the set. */
  get size(): number {
    return this.count;
  }

  /** Add a name given in hex; true when it was not in the set yet. */
  add(name: string): boolean {
    const bytes = this.fromHex(name);
    if (!bytes) throw new RangeError(`not a chunk name (64 hex digits): ${JSON.stringify(name.slice(0, 80))}`);
    return this.addBytes(bytes, 0);
  }

  /** Whether the set holds a name given in hex (false for anything that is not a 32-byte name). */
  has(name: string): boolean {
    const bytes = this.fromHex(name);
    return bytes !== null && this.slots[this.slotOf(bytes, 0)] >= 0;
  }

  /**
   * Add the chunk named by entry `index` of a chunk table (nothing for an all-zero chunk, which
   * has no name); true when it was not in the set yet.
   */
  addTableEntry(table: Buffer, index: number): boolean {
    if (isZeroEntry(table, index)) return false;
    return this.addBytes(table, TABLE_HEADER + index * NAME);
  }

  /** Add the chunks named by every entry of a chunk table page. */
  addTablePage(page: Buffer): void {
    const count = tableEntryCount(page);
    for (let i = 0; i < count; i++) this.addTableEntry(page, i);
  }

  /** The name number `n` (in the order added), in hex. */
  at(n: number): string {
    if (n < 0 || n >= this.count) throw new RangeError(`no chunk name number ${n} (the set holds ${this.count})`);
    return this.names.toString('hex', n * NAME, (n + 1) * NAME);
  }

  *[Symbol.iterator](): Iterator<string> {
    for (let n = 0; n < this.count; n++) yield this.at(n);
  }

  /** The 32 bytes of a name in hex (in a reused buffer), or null when it is not one. */
  private fromHex(name: string): Buffer | null {
    if (name.length !== NAME * 2 || this.probe.write(name, 'hex') !== NAME) return null;
    return this.probe;
  }

  private addBytes(source: Buffer, at: number): boolean {
    if ((this.count + 1) * 2 > this.slots.length) this.grow();
    const slot = this.slotOf(source, at);
    if (this.slots[slot] >= 0) return false;
    if ((this.count + 1) * NAME > this.names.length) {
      const more = Buffer.alloc(this.names.length * 2);
      this.names.copy(more, 0, 0, this.count * NAME);
      this.names = more;
    }
    source.copy(this.names, this.count * NAME, at, at + NAME);
    this.slots[slot] = this.count++;
    return true;
  }

  /** The slot holding the name at `source[at..at+32]`, or the empty slot where it would go. */
  private slotOf(source: Buffer, at: number): number {
    const mask = this.slots.length - 1;
    for (let slot = source.readUInt32BE(at) & mask; ; slot = (slot + 1) & mask) {
      const n = this.slots[slot];
      if (n < 0 || this.names.compare(source, at, at + NAME, n * NAME, (n + 1) * NAME) === 0) return slot;
    }
  }

  private grow(): void {
    this.slots = new Int32Array(this.slots.length * 2).fill(-1);
    const mask = this.slots.length - 1;
    for (let n = 0; n < this.count; n++) {
      let slot = this.names.readUInt32BE(n * NAME) & mask;
      while (this.slots[slot] >= 0) slot = (slot + 1) & mask;
      this.slots[slot] = n;
    }
  }
}
