/**
 * The pack index in the cache directory (`OpenRepositoryOptions.cacheDir`): a repository whose
 * index lives there backs up, restores, collects garbage and verifies as one held in memory,
 * and a backup's memory no longer grows with the number of chunks in the repository.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { keys } from '../../core/repository/format.ts';
import { encodePackIndex } from '../../core/repository/packs.ts';
import { backup, fixture, MiB, mixedImage, scatterChanges, writeImage } from './helpers.ts';

test('with the pack index in the cache: backups, restore, gc and verify work as with it in memory', async (t) => {
  const f = await fixture();
  t.teardown(() => f.cleanup());
  const cacheDir = join(f.dir, 'cache');
  // A budget of 20 chunks: the index is in the disk cache after the first pack.
  const opts = { passphrase: 'pw', packSize: 256 * 1024, cacheDir, memoryChunks: 20 };
  const repo = await f.open(opts);
  const image = mixedImage(4 * MiB);
  const path = await writeImage(f.dir, 'disk.img', image);
  const first = await backup(repo, path);
  t.is(repo.data.packIndex.inMemory, 0, 'the index moved to the cache');
  t.true(repo.data.packIndex.size > 20);
  const changed = scatterChanges(image, 6, 100_000);
  await writeFile(path, image);
  const second = await backup(repo, path, { changed });
  t.true(second.result.bytesRead < image.length / 2);

  // Another process (the cache is in use: a private one) restores both.
  const reader = await f.open(opts);
  await reader.restoreDisk(second.id, 'scsi0-0', join(f.dir, 'second.img'));
  t.true((await readFile(join(f.dir, 'second.img'))).equals(image));
  await reader.close();

  // The first restore point goes: gc deletes or rewrites its packs; the second still restores.
  await f.storage.delete(keys.restorePoint(first.id));
  const gc = await repo.gc();
  t.false(gc.deferred);
  t.true(gc.deletedChunks > 0, JSON.stringify(gc));
  t.true((await repo.verify({ deep: true })).ok);
  await repo.close();
  const again = await f.open(opts);
  await again.restoreDisk(second.id, 'scsi0-0', join(f.dir, 'again.img'));
  t.true((await readFile(join(f.dir, 'again.img'))).equals(image));
});

const run = promisify(execFile);

test('the memory of a backup does not grow with the repository once its pack index is in the cache', async (t) => {
  const f = await fixture();
  t.teardown(() => f.cleanup());
  const repoPath = join(f.dir, 'repo');
  await (await f.open({ chunkSize: 256 * 1024 })).close();
  // A repository that already holds many chunks: what a backup loads is their pack indexes.
  const perPack = 4000;
  const addChunks = async (packs: number, from: number) => {
    const codec = (await f.open()).data.codec;
    for (let p = from; p < from + packs; p++) {
      const entries = Array.from({ length: perPack }, (_, i) => ({ id: randomBytes(32).toString('hex'), offset: i * 4096, length: 4096 }));
      const key = keys.packIndex(`filler${String(p).padStart(6, '0')}`);
      await f.storage.put(key, codec.seal(key, encodePackIndex(entries)));
    }
  };
  const script = join(f.dir, 'backup.mts');
  await writeFile(script, `
    import { openRepository, RawFileDisk, repositoryConfigSchema } from ${JSON.stringify(new URL('../../core/repository/index.ts', import.meta.url).href)};
    import { LocalStorage } from ${JSON.stringify(new URL('../../plugins/local/storage.ts', import.meta.url).href)};
    const [repoPath, image, cacheDir] = process.argv.slice(2);
    const config = repositoryConfigSchema.parse({ storage: { type: 'local', options: { path: repoPath } } });
    const repo = await openRepository(new LocalStorage(repoPath), config, { loadIndex: true, workers: 2, cacheDir: cacheDir || undefined, memoryChunks: 50_000 });
    // The index first, then the disk: the chunks a backup reads ahead while a long index load runs
    // (at most 32 in flight, whatever the repository) would otherwise land in one run's peak or not.
    await repo.data.packIndex.sync();
    const writer = await repo.startRestorePoint({ job: 'j', vm: { id: 'v', name: 'v', driver: 'lab' }, consistency: { method: 'offline', level: 'crash', reason: 'test' }, time: new Date().toISOString() });
    const source = await RawFileDisk.open(image);
    await writer.storeDisk({ id: 'd', virtualSize: source.virtualSize, logicalSectorSize: 512 }, source, {});
    await writer.commit();
    await source.close();
    const indexed = repo.data.packIndex.size;
    await repo.close();
    console.log(JSON.stringify({ indexed, maxRssMiB: process.resourceUsage().maxRSS / 1024 }));
  `);
  const img = await writeImage(f.dir, 'disk.img', mixedImage(8 * MiB));
  const go = async (cacheDir: string) => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', script, repoPath, img, cacheDir], { maxBuffer: 1 << 20 });
    return JSON.parse(stdout.trim().split('\n').at(-1)!) as { indexed: number; maxRssMiB: number };
  };
  await addChunks(25, 0); // 100,000 chunks
  const small = { memory: await go(''), cache: await go(join(f.dir, 'cache-small')) };
  await addChunks(250, 25); // 1,100,000 chunks
  const large = { memory: await go(''), cache: await go(join(f.dir, 'cache-large')), again: await go(join(f.dir, 'cache-large')) };
  const mib = (r: { maxRssMiB: number }) => `${r.maxRssMiB.toFixed(0)} MiB`;
  t.log(`peak RSS of a backup, index in memory: ${mib(small.memory)} with ${small.memory.indexed} chunks, ${mib(large.memory)} with ${large.memory.indexed}`);
  t.log(`peak RSS of a backup, index in the cache: ${mib(small.cache)} with ${small.cache.indexed} chunks, ${mib(large.cache)} with ${large.cache.indexed} (${mib(large.again)} on the next run)`);
  t.true(large.cache.indexed >= 1_100_000);
  // A million more chunks: tens of MiB more with the index in memory. With the cache, the run
  // that builds it grows by a fraction of that (the JavaScript heap settling at its working size:
  // the same ~160 MiB with 3 or 6 million chunks, measured), and the next run not at all.
  const inMemory = large.memory.maxRssMiB - small.memory.maxRssMiB;
  t.true(inMemory > 40, `in memory: ${mib(large.memory)} against ${mib(small.memory)}`);
  t.true(large.cache.maxRssMiB - small.cache.maxRssMiB < inMemory / 3, `with the cache: ${mib(large.cache)} against ${mib(small.cache)}`);
  t.true(large.again.maxRssMiB < small.memory.maxRssMiB + 10, `with the cache, next run: ${mib(large.again)} against ${mib(small.memory)} in memory with a tenth of the chunks`);
});
