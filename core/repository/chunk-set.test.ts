import test from 'ava';
import { createHash } from 'node:crypto';
import { ChunkNameSet } from './chunk-set.ts';
import { newTablePage, setTableEntry } from './format.ts';

const name = (i: number) => createHash('sha256').update(String(i)).digest('hex');

test('holds exactly the names added, through growth, each once', (t) => {
  const set = new ChunkNameSet();
  const reference = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    const n = name(i % 15_000); // a quarter added twice
    t.is(set.add(n), !reference.has(n));
    reference.add(n);
  }
  t.is(set.size, reference.size);
  for (let i = 0; i < 15_000; i++) t.true(set.has(name(i)));
  for (let i = 15_000; i < 16_000; i++) t.false(set.has(name(i)));
  t.deepEqual(new Set(set), reference);
  t.is(set.at(0), name(0));
});

test('names sharing their first bytes (the table key) stay apart', (t) => {
  const set = new ChunkNameSet();
  const prefix = 'ab'.repeat(16);
  const names = Array.from({ length: 3000 }, (_, i) => prefix + i.toString(16).padStart(32, '0'));
  for (const n of names) t.true(set.add(n));
  for (const n of names) t.true(set.has(n));
  t.false(set.has(prefix + 'f'.repeat(32)));
  t.is(set.size, names.length);
});

test('takes names straight from a chunk table and leaves zero chunks out', (t) => {
  const table = newTablePage(4096, 4096 * 4, 0, 4);
  setTableEntry(table, 0, name(1));
  setTableEntry(table, 2, name(2));
  setTableEntry(table, 3, name(1));
  const set = new ChunkNameSet();
  t.deepEqual([0, 1, 2, 3].map((i) => set.addTableEntry(table, i)), [true, false, true, false]);
  t.deepEqual([...set], [name(1), name(2)]);
});

test('refuses what is not a chunk name', (t) => {
  const set = new ChunkNameSet();
  t.throws(() => set.add('not hex'), { instanceOf: RangeError, message: /not a chunk name/ });
  t.throws(() => set.add('ab'), { instanceOf: RangeError });
  t.throws(() => set.add('zz'.repeat(32)), { instanceOf: RangeError });
  t.false(set.has('abc'));
  t.throws(() => set.at(0), { instanceOf: RangeError });
});
