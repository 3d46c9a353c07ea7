import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { LocalStorage } from '../../plugins/local/storage.ts';
import { BlobCodec } from './codec.ts';
import { keys } from './format.ts';
import { encodePackIndex, PackIndex, type PackEntry } from './packs.ts';
import { RetryingStorage } from './storage-util.ts';
import { canMount, mountTmpfs } from '../../test/repository/tmpfs.ts';

const id = () => randomBytes(32).toString('hex');

/** Local storage that counts the pack indexes read. */
class CountingStorage extends LocalStorage {
  indexGets = 0;
  override async get(key: string): Promise<Buffer> {
    if (key.startsWith(keys.packIndexPrefix)) this.indexGets++;
    return super.get(key);
  }
}

interface Rig {
  dir: string;
  cacheDir: string;
  local: CountingStorage;
  storage: RetryingStorage;
  codec: BlobCodec;
  /** Store a pack's index (the pack itself is not needed by the index). */
  putIndex(pack: string, entries: PackEntry[]): Promise<void>;
  open(memoryChunks?: number, repositoryId?: string): PackIndex;
}

async function rig(t: { teardown(fn: () => Promise<void>): void }): Promise<Rig> {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-packstore-'));
  const local = new CountingStorage(join(dir, 'repo'));
  const storage = new RetryingStorage(local);
  const codec = new BlobCodec({ keys: null, compressionLevel: 1 });
  const cacheDir = join(dir, 'cache');
  const opened: PackIndex[] = [];
  t.teardown(async () => {
    for (const i of opened) await i.close();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    dir, cacheDir, local, storage, codec,
    async putIndex(pack, entries) {
      const key = keys.packIndex(pack);
      await storage.put(key, codec.seal(key, encodePackIndex(entries)));
    },
    open(memoryChunks = 500, repositoryId = 'repo-1') {
      const index = new PackIndex(storage, codec, { cacheDir, repositoryId, memoryChunks });
      opened.push(index);
      return index;
    },
  };
}

/** `count` packs of `per` chunks, their indexes stored. */
async function packs(r: Rig, count: number, per: number, prefix = 'pack'): Promise<Map<string, PackEntry[]>> {
  const all = new Map<string, PackEntry[]>();
  for (let p = 0; p < count; p++) {
    const entries = Array.from({ length: per }, (_, i) => ({ id: id(), offset: i * 1000, length: 900 + p }));
    all.set(`${prefix}${p}`, entries);
    await r.putIndex(`${prefix}${p}`, entries);
  }
  return all;
}

function everyFound(t: { fail(m: string): void }, index: PackIndex, all: Map<string, PackEntry[]>): boolean {
  for (const [pack, entries] of all) {
    for (const e of entries) {
      const at = index.get(e.id);
      if (!at || at.pack !== pack || at.offset !== e.offset || at.length !== e.length) {
        t.fail(`chunk ${e.id} of ${pack}: ${JSON.stringify(at)}`);
        return false;
      }
    }
  }
  return true;
}

test('beyond memoryChunks the pack index moves to the disk cache: every chunk is found there, and the packs view is whole', async (t) => {
  const r = await rig(t);
  const all = await packs(r, 30, 100);
  const index = r.open(500);
  await index.sync();
  t.is(index.size, 3000);
  t.is(index.inMemory, 0, 'everything moved out of memory');
  t.true(everyFound(t, index, all));
  t.is(index.get(id()), undefined);
  t.is(index.packs.size, 30);
  t.deepEqual(index.packs.get('pack7'), all.get('pack7'));
  t.deepEqual([...index.packs.keys()].sort(), [...all.keys()].sort());

  // A pack stored by this process (a backup) is found at once, and goes to the disk cache too.
  const fresh = Array.from({ length: 50 }, (_, i) => ({ id: id(), offset: i, length: 1 }));
  index.add('fresh', fresh);
  t.deepEqual(index.get(fresh[10].id), { pack: 'fresh', offset: 10, length: 1 });
  await index.close();
  t.true(existsSync(join(r.cacheDir, 'repo-1', 'pack-index')));
});

test('a chunk held by two packs is found in the one taken in last, and still found when either goes', async (t) => {
  const r = await rig(t);
  const all = await packs(r, 10, 100);
  const index = r.open(50);
  await index.sync();
  const shared = all.get('pack3')![5];
  // gc repacked it: a copy in a new pack.
  await r.putIndex('repacked', [{ id: shared.id, offset: 7, length: shared.length }]);
  await index.sync();
  t.deepEqual(index.get(shared.id), { pack: 'repacked', offset: 7, length: shared.length });
  // The new pack is removed (say, by a gc elsewhere): the old copy is found again.
  await r.storage.delete(keys.packIndex('repacked'));
  await index.sync();
  t.deepEqual(index.get(shared.id), { pack: 'pack3', offset: shared.offset, length: shared.length });
  // Both copies again, then the old pack goes (the usual end of a repack): the copy is found.
  await r.putIndex('repacked', [{ id: shared.id, offset: 7, length: shared.length }]);
  await r.storage.delete(keys.packIndex('pack3'));
  await index.sync();
  t.deepEqual(index.get(shared.id), { pack: 'repacked', offset: 7, length: shared.length });
  t.is(index.get(all.get('pack3')![6].id), undefined, 'the rest of the removed pack is gone');
  t.false(index.packs.has('pack3'));
  all.delete('pack3');
  t.true(everyFound(t, index, all));
});

test('the disk cache is kept between runs: the next run reads only new pack indexes, and forgets removed ones', async (t) => {
  const r = await rig(t);
  const all = await packs(r, 20, 100);
  const first = r.open(100);
  await first.sync();
  await first.close();

  // Meanwhile (another host): two packs added, one removed.
  const more = await packs(r, 2, 100, 'later');
  await r.storage.delete(keys.packIndex('pack4'));
  const gone = all.get('pack4')!;
  all.delete('pack4');
  r.local.indexGets = 0;
  const second = r.open(100);
  await second.sync();
  t.is(r.local.indexGets, 2, 'only the two new indexes are read');
  t.true(everyFound(t, second, all));
  t.true(everyFound(t, second, more));
  t.is(second.get(gone[0].id), undefined, 'a pack removed meanwhile is not found');
  t.is(second.size, 2100);

  // Another process at the same time gets a private one, removed when it closes.
  const third = r.open(100);
  await third.sync();
  t.true(everyFound(t, third, all));
  const privateDirs = (await readdir(join(r.cacheDir, 'repo-1'))).filter((n) => n.startsWith('pack-index.'));
  t.is(privateDirs.length, 1);
  await third.close();
  t.deepEqual((await readdir(join(r.cacheDir, 'repo-1'))).filter((n) => n.startsWith('pack-index.')), []);

  // A cache of another repository is another directory: nothing of this one is found there.
  const other = r.open(100, 'repo-2');
  await r.storage.delete(keys.packIndex('pack5'));
  await other.sync();
  t.is(other.size, 2000);
  t.is(other.get(all.get('pack5')![0].id), undefined);
  t.true(everyFound(t, other, more));
});

test('without a cache directory, or under memoryChunks, the index stays in memory', async (t) => {
  const r = await rig(t);
  const all = await packs(r, 5, 100);
  const small = r.open(10_000);
  await small.sync();
  t.is(small.inMemory, 500);
  t.true(everyFound(t, small, all));
  const none = new PackIndex(r.storage, r.codec, { memoryChunks: 10 });
  await none.sync();
  t.is(none.inMemory, 500);
  await none.close();
  t.false(existsSync(join(r.cacheDir, 'repo-1')));
});

test('a cache left by a process that stopped while changing it, or with a file cut short, is built again from the repository', async (t) => {
  const r = await rig(t);
  const all = await packs(r, 12, 100);
  const running = r.open(100);
  await running.sync();
  // What a crash leaves: the cache as it is while a process changes it (marked so), its lock
  // naming a process that is gone.
  const crashed = join(r.dir, 'crashed');
  await cp(r.cacheDir, crashed, { recursive: true });
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  await writeFile(join(crashed, 'repo-1', 'pack-index', 'lock'), String(dead));
  await running.close();

  const after = new PackIndex(r.storage, r.codec, { cacheDir: crashed, repositoryId: 'repo-1', memoryChunks: 100 });
  t.teardown(() => after.close());
  r.local.indexGets = 0;
  await after.sync();
  t.is(r.local.indexGets, 12, 'every pack index read again');
  t.true(everyFound(t, after, all));
  await after.close();

  // A clean cache with a file cut short (a disk that lost its end): built again too, whether it
  // is the table or the pack log (cut in the middle of a record).
  const cutShort = async (file: string, bytes: number) => {
    const path = join(r.cacheDir, 'repo-1', 'pack-index', file);
    await truncate(path, (await stat(path)).size - bytes);
    const cut = r.open(100);
    r.local.indexGets = 0;
    await cut.sync();
    t.is(r.local.indexGets, 12, `${file} cut short: every pack index read again`);
    t.true(everyFound(t, cut, all));
    await cut.close();
  };
  await cutShort('chunks', 4096);
  await cutShort('packs', 100);
});

test('once removed packs outweigh the held ones, the pack log is written again without them; every chunk is still found, now and in the next run', async (t) => {
  const r = await rig(t);
  const all = await packs(r, 120, 1000);
  const index = r.open(1000);
  await index.sync();
  const log = join(r.cacheDir, 'repo-1', 'pack-index', 'packs');
  const before = (await stat(log)).size;
  // gc elsewhere removed 110 of the 120 packs.
  for (let p = 0; p < 110; p++) {
    await r.storage.delete(keys.packIndex(`pack${p}`));
    all.delete(`pack${p}`);
  }
  const gone = (await r.storage.list(keys.packIndexPrefix)).length;
  t.is(gone, 10);
  await index.sync();
  const after = (await stat(log)).size;
  t.true(after < before / 10, `the log shrank: ${before} -> ${after} bytes`);
  t.is(index.size, 10_000);
  t.true(everyFound(t, index, all));
  await index.close();
  const next = r.open(1000);
  r.local.indexGets = 0;
  await next.sync();
  t.is(r.local.indexGets, 0);
  t.true(everyFound(t, next, all));
  // And it takes new packs in after the rewrite.
  const more = await packs(r, 3, 500, 'more');
  await next.sync();
  t.true(everyFound(t, next, more));
});

test('a disk cache that fills up: the index stays in memory, every chunk is found, and the next process builds the cache again', async (t) => {
  if (!canMount) {
    if (process.env.CI === 'true') t.fail('needs root to mount a tmpfs');
    else t.log('needs root to mount a tmpfs; skipped');
    return;
  }
  const r = await rig(t);
  const all = await packs(r, 20, 1000);
  const small = mountTmpfs(2);
  t.teardown(() => small.unmount());
  const index = new PackIndex(r.storage, r.codec, { cacheDir: small.dir, repositoryId: 'repo-1', memoryChunks: 100 });
  await index.sync();
  t.true(index.inMemory > 0, 'what did not fit stayed in memory');
  t.true(everyFound(t, index, all));
  // A pack stored later is found too (it stays in memory: the cache is not used any more).
  const fresh = [{ id: id(), offset: 1, length: 2 }];
  index.add('fresh', fresh);
  t.deepEqual(index.get(fresh[0].id), { pack: 'fresh', offset: 1, length: 2 });
  await index.close();

  // Room again: the cache, left marked as changed, is built again from the repository.
  const roomy = new PackIndex(r.storage, r.codec, { cacheDir: r.cacheDir, repositoryId: 'repo-1', memoryChunks: 100 });
  t.teardown(() => roomy.close());
  await cp(join(small.dir, 'repo-1'), join(r.cacheDir, 'repo-1'), { recursive: true });
  r.local.indexGets = 0;
  await roomy.sync();
  t.is(r.local.indexGets, 20, 'every pack index read again');
  t.true(everyFound(t, roomy, all));
  t.is(roomy.inMemory, 0);
});
