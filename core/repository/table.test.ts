import { createHash } from 'node:crypto';
import test from 'ava';
import { CorruptImageError } from '../errors.ts';
import { chunkNamer } from './codec.ts';
import { keys, newTablePage, parseTablePage, setTableEntry, tableEntry, type DiskRecord } from './format.ts';
import { ChunkTableReader, ChunkTableWriter } from './table.ts';

const CHUNK = 4096;
const nameChunk = chunkNamer('blake3', null);
const name = (n: number) => createHash('sha256').update(String(n)).digest('hex');

/** A writer whose pages go into `stored` (plaintext by name), as the repository would store them. */
function writer(chunks: number, pageChunks: number, base: ChunkTableReader | null, stored = new Map<string, Buffer>(), fail?: (page: Buffer) => boolean) {
  const order: number[] = [];
  const w = new ChunkTableWriter(CHUNK, chunks * CHUNK, pageChunks, base, async (page) => {
    if (fail?.(page)) throw new Error('no space left on device');
    order.push(parseTablePage(page, 'page').firstIndex);
    const id = nameChunk(page);
    stored.set(keys.table(id), Buffer.from(page));
    return id;
  });
  return { w, stored, order };
}

function record(chunks: number, pageChunks: number, tablePages: string[]): DiskRecord {
  return { id: 'd', virtualSize: chunks * CHUNK, logicalSectorSize: 512, chunkSize: CHUNK, chunkCount: chunks, tablePages, tablePageChunks: pageChunks, dataChunks: 0, zeroChunks: 0, bytesRead: 0, bytesStored: 0, fullRead: true };
}

function reader(rec: DiskRecord, stored: Map<string, Buffer>, keep = 4) {
  let fetches = 0;
  const r = new ChunkTableReader(rec, async (key) => {
    fetches++;
    const page = stored.get(key);
    if (!page) throw new Error(`${key} is missing`);
    return page;
  }, nameChunk, keep);
  return { r, fetches: () => fetches };
}

test('writer: pages are completed in order as the backup moves on, untouched pages are zero pages, names land where they were set', async (t) => {
  const { w, stored, order } = writer(10, 4, null);
  w.set(1, name(1));
  w.set(2, null); // a zero chunk without a base: nothing to remember
  w.advance(5); // pages before entry 5's page (page 0) are complete
  await new Promise((r) => setImmediate(r));
  t.deepEqual(order, [0]);
  w.set(9, name(9));
  const ids = await w.finish();
  t.deepEqual(order, [0, 4, 8], 'page 1 was never touched and is stored as zeros');
  t.is(ids.length, 3);
  t.is(w.dataChunks, 2);
  const { r } = reader(record(10, 4, ids), stored);
  const entries = await Promise.all(Array.from({ length: 10 }, (_, i) => r.entry(i)));
  t.deepEqual(entries, [null, name(1), null, null, null, null, null, null, null, name(9)]);
  t.is(parseTablePage(stored.get(keys.table(ids[2]))!, 'p').count, 2, 'the last page is short');
});

test('writer with a base: entries not set come from the base, zero runs and names set override it, whatever the base\'s paging', async (t) => {
  // The base: one version 1 table of all 10 entries (a table written before pages).
  const v1 = newTablePage(CHUNK, 10 * CHUNK, 0, 10);
  v1[3] = 1;
  for (let i = 0; i < 10; i++) setTableEntry(v1, i, name(100 + i));
  const stored = new Map([[keys.table(nameChunk(v1)), v1]]);
  const baseRecord: DiskRecord = { ...record(10, 4, []), tablePages: undefined, tablePageChunks: undefined, table: nameChunk(v1) };
  const base = reader(baseRecord, stored).r;
  const { w } = writer(10, 4, base, stored);
  // The planner names zero chunks ahead of the chunks being stored, and not in order with them.
  w.set(6, null);
  w.set(7, null);
  w.set(2, name(2));
  w.set(3, null);
  w.advance(4);
  w.set(5, name(5));
  const ids = await w.finish();
  t.is(w.dataChunks, 7);
  const { r } = reader(record(10, 4, ids), stored);
  const entries = await Promise.all(Array.from({ length: 10 }, (_, i) => r.entry(i)));
  t.deepEqual(entries, [name(100), name(101), name(2), null, name(104), name(5), null, null, name(108), name(109)]);
});

test('writer: an unchanged page comes out as the same blob as the base\'s', async (t) => {
  const first = writer(12, 4, null);
  for (let i = 0; i < 12; i++) first.w.set(i, name(i));
  const ids = await first.w.finish();
  const base = reader(record(12, 4, ids), first.stored).r;
  const second = writer(12, 4, base, first.stored);
  second.w.set(5, name(555));
  const next = await second.w.finish();
  t.is(next[0], ids[0]);
  t.not(next[1], ids[1]);
  t.is(next[2], ids[2]);
});

test('writer: an entry for a page already stored is refused; a failed store fails finish and stores nothing after it', async (t) => {
  const { w } = writer(8, 4, null);
  w.advance(4);
  t.throws(() => w.set(1, name(1)), { message: /page 0 is already stored/ });
  const failing = writer(12, 4, null, new Map(), (page) => parseTablePage(page, 'p').firstIndex === 4);
  failing.w.set(0, name(0));
  await t.throwsAsync(() => failing.w.finish(), { message: /no space left/ });
  t.deepEqual(failing.order, [0], 'the page after the failed one was not stored');
});

test('reader: keeps at most `keep` pages; a page in the wrong place or with the wrong content is corrupt', async (t) => {
  const { w, stored } = writer(12, 4, null);
  for (let i = 0; i < 12; i++) w.set(i, name(i));
  const ids = await w.finish();
  const { r, fetches } = reader(record(12, 4, ids), stored, 2);
  t.is(await r.entry(0), name(0));
  t.is(r.loaded(1), name(1));
  t.is(r.loaded(4), undefined, 'page 1 is not loaded yet');
  await r.ensure(4);
  await r.ensure(8);
  t.is(r.loaded(0), undefined, 'page 0 was let go (keep 2)');
  t.is(r.at(9), name(9));
  t.throws(() => r.at(0), { message: /not loaded/ });
  t.is(fetches(), 3);
  t.is(r.pageEnd(5), 8);
  t.is(r.pageEnd(10), 12);

  const swapped = reader(record(12, 4, [ids[1], ids[0], ids[2]]), stored).r;
  await t.throwsAsync(() => swapped.entry(0), { instanceOf: CorruptImageError, message: /does not match disk d \(page 0\)/ });
  const altered = Buffer.from(stored.get(keys.table(ids[0]))!);
  altered[40] ^= 1;
  stored.set(keys.table(ids[0]), altered);
  const damaged = reader(record(12, 4, ids), stored).r;
  await t.throwsAsync(() => damaged.page(0), { instanceOf: CorruptImageError, message: /does not match its name/ });
  t.is(tableEntry(stored.get(keys.table(ids[1]))!, 0), name(4));
});
