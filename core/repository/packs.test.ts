import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { CorruptImageError } from '../errors.ts';
import { LocalStorage } from '../../plugins/local/storage.ts';
import { BlobCodec } from './codec.ts';
import { keys } from './format.ts';
import { decodePackIndex, encodePackIndex, PackBuilder, PackIndex, prefetchPackIndexes, readPackedBlob } from './packs.ts';
import { RetryingStorage } from './storage-util.ts';

const id = () => randomBytes(32).toString('hex');

test('pack index: encode/decode round trip; a damaged index is refused naming it', (t) => {
  const entries = [
    { id: id(), offset: 0, length: 1234 },
    { id: id(), offset: 1234, length: 2 ** 20 + 5 },
    { id: id(), offset: 2 ** 31 + 7, length: 1 },
  ];
  const buf = encodePackIndex(entries);
  t.is(buf.length, 8 + 3 * 40);
  t.deepEqual(decodePackIndex(buf, 'index/x'), entries);
  t.deepEqual(decodePackIndex(encodePackIndex([]), 'index/x'), []);
  t.throws(() => decodePackIndex(buf.subarray(0, buf.length - 1), 'index/x'), { instanceOf: CorruptImageError, message: /index\/x.*expected 128/ });
  const bad = Buffer.from(buf);
  bad[0] = 0x58;
  t.throws(() => decodePackIndex(bad, 'index/y'), { instanceOf: CorruptImageError, message: /index\/y.*bad magic/ });
});

test('pack builder: packs of the target size, durable with their index before the chunks are visible; another process finds them through the stored indexes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-packs-'));
  try {
    const storage = new RetryingStorage(new LocalStorage(dir));
    const codec = new BlobCodec({ keys: { encKey: randomBytes(32), idKey: randomBytes(32) }, compressionLevel: 1 });
    const index = new PackIndex(storage, codec);
    const builder = new PackBuilder(storage, codec, index, 100_000);
    const blobs = new Map<string, Buffer>();
    for (let i = 0; i < 35; i++) {
      const c = id();
      const blob = codec.seal(keys.chunk(c), randomBytes(10_000 + i));
      blobs.set(c, blob);
      await builder.ready();
      builder.add(c, blob);
      t.true(builder.holds(c) || index.get(c) !== undefined);
    }
    const again = [...blobs.keys()][3];
    // The same chunk again: the builder (still storing it) or the index (stored) knows it.
    t.true(builder.holds(again) || index.get(again) !== undefined);
    await builder.finish();
    t.is(builder.packsStored, 4, 'three full packs of >= 100000 bytes and the rest');
    t.is((await storage.list(keys.packsPrefix)).length, 4);
    t.is((await storage.list(keys.packIndexPrefix)).length, 4);

    // A fresh index (another process) loads the stored indexes and reads every blob back.
    const other = new PackIndex(storage, codec);
    await other.sync();
    t.is([...other.packs.values()].reduce((n, e) => n + e.length, 0), 35);
    // Indexes fetched ahead (at most `limit`, while the keys are derived) and the rest by sync.
    let gets = 0;
    const target = storage.target;
    const counting = new RetryingStorage(new Proxy(target, {
      get: (t, p) => (p === 'get' ? (key: string) => (gets++, t.get(key)) : Reflect.get(t, p, t)),
    }));
    const ahead = await prefetchPackIndexes(counting, 2);
    t.is(ahead.size, 2);
    t.is(gets, 2, 'only two fetched ahead');
    const adopted = new PackIndex(counting, codec);
    adopted.adopt(Promise.resolve(ahead));
    await adopted.sync();
    t.is(gets, 4, 'the other two fetched by sync, none twice');
    t.is(adopted.size, 35);
    for (const [c, blob] of blobs) {
      const at = other.get(c)!;
      t.truthy(at, `chunk ${c} is indexed`);
      t.true((await readPackedBlob(storage, c, at)).equals(blob));
    }
    // An index that cannot be read is remembered (its chunks are missing), not fatal.
    const [firstPack] = other.packs.keys();
    await storage.put(keys.packIndex(firstPack), Buffer.from('garbage'));
    const third = new PackIndex(storage, codec);
    await third.sync();
    t.true(third.damaged.has(firstPack));
    t.is(third.packs.size, 3);
    // A removed pack is dropped by the next sync.
    await storage.delete(keys.packIndex(firstPack));
    await other.sync();
    t.false(other.packs.has(firstPack));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('pack index: finds every chunk among many, the latest pack wins for a chunk stored twice, a dropped pack\'s chunks held elsewhere stay found', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-packindex-'));
  try {
    const storage = new RetryingStorage(new LocalStorage(dir));
    const codec = new BlobCodec({ keys: null, compressionLevel: 1 });
    const index = new PackIndex(storage, codec);
    // 50 packs of 2000 chunks: the table grows several times.
    const all: string[][] = [];
    for (let p = 0; p < 50; p++) {
      const entries = Array.from({ length: 2000 }, (_, i) => ({ id: id(), offset: i * 100, length: 100 }));
      index.add(`pack${p}`, entries);
      all.push(entries.map((e) => e.id));
    }
    t.is(index.size, 100_000);
    for (const [p, ids] of all.entries()) {
      for (const [i, c] of ids.entries()) {
        const at = index.get(c);
        if (!at || at.pack !== `pack${p}` || at.offset !== i * 100) {
          t.fail(`chunk ${i} of pack ${p}: ${JSON.stringify(at)}`);
          return;
        }
      }
    }
    t.is(index.get(id()), undefined, 'an unknown chunk');
    t.is(index.get('not a chunk name'), undefined);
    // A chunk stored again in a later pack (gc repacking): found there; the old pack dropped: still found.
    const moved = all[7][5];
    index.add('repacked', [{ id: moved, offset: 40, length: 100 }]);
    t.deepEqual(index.get(moved), { pack: 'repacked', offset: 40, length: 100 });
    t.is(index.size, 100_000);
    t.deepEqual(index.packs.get('repacked'), [{ id: moved, offset: 40, length: 100 }]);
    t.is(index.packs.size, 51);
    // A sync drops the packs whose indexes are gone from the storage target (here: all but the
    // repacked one), and the chunk that moved is still found where it is now.
    const repackedKey = keys.packIndex('repacked');
    await storage.put(repackedKey, codec.seal(repackedKey, encodePackIndex([{ id: moved, offset: 40, length: 100 }])));
    await index.sync();
    t.is(index.size, 1);
    t.deepEqual(index.get(moved), { pack: 'repacked', offset: 40, length: 100 });
    t.is(index.get(all[7][6]), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
