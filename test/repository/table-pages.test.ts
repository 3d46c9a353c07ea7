import { execFile } from 'node:child_process';
import { readFile, writeFile, open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import test from 'ava';
import { keys } from '../../core/repository/format.ts';
import { CorruptImageError } from '../../core/errors.ts';
import { backup, fixture, meta, MiB, mixedImage, writeImage } from './helpers.ts';

const KiB = 1024;
const CHUNK = 64 * KiB;
/** Four entries a page: a 1.3 MiB disk has six pages, the last one short. */
const PAGE = 4;

type Repo = Awaited<ReturnType<Awaited<ReturnType<typeof fixture>>['open']>>;

/** A backup on day `day`, with the disk record its manifest holds. */
async function backupDay(repo: Repo, path: string, day: number, changed?: Array<{ offset: number; length: number }> | null) {
  const b = await backup(repo, path, { time: new Date(Date.UTC(2026, 2, day)), changed });
  return { ...b, disk: (await repo.manifest(b.id)).disks[0] };
}

test('a chunk table is stored in pages: unchanged pages are shared, every restore point restores whole, a damaged page is named', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open({ tablePageChunks: PAGE });
    const size = 20 * CHUNK + 4096; // 21 chunks
    const v1 = mixedImage(size);
    const img = await writeImage(f.dir, 'disk.img', v1);
    const b1 = await backupDay(repo, img, 1);
    t.is(b1.disk.tablePageChunks, PAGE);
    t.is(b1.disk.tablePages!.length, 6);
    t.is(b1.disk.table, undefined);

    // A change inside page 1 (chunks 4..7) only: the other pages are the same blobs.
    const v2 = Buffer.from(v1);
    v2.fill(7, 5 * CHUNK + 100, 5 * CHUNK + 300);
    await writeFile(img, v2);
    const b2 = await backupDay(repo, img, 2, [{ offset: 5 * CHUNK + 100, length: 200 }]);
    t.false(b2.result.fullRead);
    const changedPages = b2.disk.tablePages!.map((id, k) => (id === b1.disk.tablePages![k] ? null : k)).filter((k) => k !== null);
    t.deepEqual(changedPages, [1], 'only the page holding the changed chunk is new');
    t.is(b2.disk.dataChunks, b1.disk.dataChunks);

    // A change that makes a chunk of page 4 all zeros, read in full: that entry becomes a zero chunk.
    const v3 = Buffer.from(v2);
    v3.fill(0, 16 * CHUNK, 17 * CHUNK);
    await writeFile(img, v3);
    const b3 = await backupDay(repo, img, 3, null);
    t.true(b3.result.fullRead);
    const wasData = v2.subarray(16 * CHUNK, 17 * CHUNK).some((b) => b !== 0);
    t.is(b3.disk.dataChunks, b2.disk.dataChunks - (wasData ? 1 : 0));

    for (const [id, want] of [[b1.id, v1], [b2.id, v2], [b3.id, v3]] as const) {
      const out = join(f.dir, `r-${id}.img`);
      await repo.restoreDisk(id, 'scsi0-0', out);
      t.true((await readFile(out)).equals(want), `restore point ${id} restores its own content`);
    }
    // A byte range across a page boundary (entries 3 and 4).
    const stream = new PassThrough();
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    await repo.restoreRange(b2.id, 'scsi0-0', { offset: 4 * CHUNK - 1000, length: 3000 }, stream);
    t.true(Buffer.concat(parts).equals(v2.subarray(4 * CHUNK - 1000, 4 * CHUNK + 2000)));
    t.true((await repo.verify({ deep: true })).ok);

    // Damage page 0, which all three restore points share: verify names each of them and the
    // page; a restore says which blob is damaged; gc refuses to guess.
    const page0 = b1.disk.tablePages![0];
    t.is(b3.disk.tablePages![0], page0);
    const key = keys.table(page0);
    const bytes = await f.storage.get(key);
    bytes[bytes.length - 3] ^= 0xff;
    await f.storage.put(key, bytes);
    const report = await repo.verify();
    t.false(report.ok);
    t.deepEqual(report.damaged.map((d) => d.id).sort(), [b1.id, b2.id, b3.id].sort());
    for (const d of report.damaged) t.true(d.problems.some((p) => p.chunk === `table ${page0}`), JSON.stringify(d.problems));
    const error = await t.throwsAsync(() => repo.restoreDisk(b2.id, 'scsi0-0', join(f.dir, 'bad.img')), { instanceOf: CorruptImageError });
    t.regex(`${error!.message} ${(error as CorruptImageError).where ?? ''}`, new RegExp(page0));
    await t.throwsAsync(() => repo.gc(), { message: /chunk table of restore point .* cannot be read \(page 0/ });
  } finally {
    await f.cleanup();
  }
});

test('a restore point written before tables had pages (one table blob) is still restored, verified and kept by gc', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const image = mixedImage(MiB + 4096);
    const img = await writeImage(f.dir, 'disk.img', image);
    const b1 = await backupDay(repo, img, 1);
    t.is(b1.disk.tablePages!.length, 1);
    // Rewrite its only page as a version 1 table (the same entries, version byte 1) named by its content.
    const page = await repo.data.getBlob(keys.table(b1.disk.tablePages![0]));
    const old = Buffer.from(page);
    old[3] = 1;
    const oldId = repo.data.nameChunk(old);
    await repo.data.putBlob(keys.table(oldId), old);
    const { tablePages: _pages, tablePageChunks: _n, ...rest } = b1.disk;
    const writer = await repo.startRestorePoint(meta('vm-old', new Date(Date.UTC(2026, 0, 1))));
    await writer.addDisk({ ...rest, table: oldId });
    const { id } = await writer.commit();
    t.is((await repo.manifest(id)).disks[0].table, oldId);

    const out = join(f.dir, 'old.img');
    await repo.restoreDisk(id, 'scsi0-0', out);
    t.true((await readFile(out)).equals(image));
    t.true((await repo.verify({ deep: true })).ok);
    // An unreferenced table for gc to sweep: the version 1 table is referenced and stays.
    const stray = Buffer.from(old);
    stray[100] ^= 1;
    await repo.data.putBlob(keys.table(repo.data.nameChunk(stray)), stray);
    const gc = await repo.gc();
    t.is(gc.deletedTables, 1);
    t.not(await f.storage.head(keys.table(oldId)), null);
    await repo.restoreDisk(id, 'scsi0-0', join(f.dir, 'old-after-gc.img'));
    t.true((await readFile(join(f.dir, 'old-after-gc.img'))).equals(image), 'gc kept the version 1 table and its chunks');
    // An incremental on top of it starts from the version 1 table.
    const next = Buffer.from(image);
    next.fill(9, 200, 300);
    await writeFile(img, next);
    const { id: id2 } = await backup(repo, img, { vm: 'vm-old', time: new Date(Date.UTC(2026, 0, 2)), changed: [{ offset: 200, length: 100 }] });
    await repo.restoreDisk(id2, 'scsi0-0', join(f.dir, 'next.img'));
    t.true((await readFile(join(f.dir, 'next.img'))).equals(next));
  } finally {
    await f.cleanup();
  }
});

const run = promisify(execFile);

test('the memory of a backup does not grow with the disk: 8 TiB sparse disk, full and incremental', async (t) => {
  const f = await fixture();
  try {
    // 8 TiB with 256 KiB chunks: 32 Mi entries, a 1 GiB table if it were held whole.
    const size = 8 * 2 ** 40;
    const img = join(f.dir, 'huge.img');
    const h = await openFile(img, 'w');
    await h.write(mixedImage(2 * MiB), 0, 2 * MiB, 0);
    await h.write(mixedImage(2 * MiB), 0, 2 * MiB, size / 2);
    await h.truncate(size);
    await h.close();
    const script = join(f.dir, 'backup.mts');
    await writeFile(script, `
      import { openRepository, RawFileDisk, repositoryConfigSchema } from ${JSON.stringify(new URL('../../core/repository/index.ts', import.meta.url).href)};
      import { LocalStorage } from ${JSON.stringify(new URL('../../plugins/local/storage.ts', import.meta.url).href)};
      const [repoPath, image, changed] = process.argv.slice(2);
      const config = repositoryConfigSchema.parse({ storage: { type: 'local', options: { path: repoPath } } });
      const repo = await openRepository(new LocalStorage(repoPath), config, { create: true, scrypt: { N: 1024, r: 8, p: 1 }, workers: 2 });
      const writer = await repo.startRestorePoint({ job: 'j', vm: { id: 'v', name: 'v', driver: 'lab' }, consistency: { method: 'offline', level: 'crash', reason: 'test' }, time: new Date().toISOString() });
      const source = await RawFileDisk.open(image);
      const r = await writer.storeDisk({ id: 'd', virtualSize: source.virtualSize, logicalSectorSize: 512 }, source, { changed: changed ? JSON.parse(changed) : undefined });
      await writer.commit();
      await source.close();
      await repo.close();
      console.log(JSON.stringify({ ...r, maxRssMiB: process.resourceUsage().maxRSS / 1024 }));
    `);
    const repoPath = join(f.dir, 'repo-huge');
    const go = async (changed?: unknown) => {
      const { stdout } = await run(process.execPath, ['--import', 'tsx', script, repoPath, img, ...(changed ? [JSON.stringify(changed)] : [])], { maxBuffer: 1 << 20 });
      return JSON.parse(stdout.trim().split('\n').at(-1)!) as { bytesRead: number; maxRssMiB: number };
    };
    const full = await go();
    t.log(`full backup of an 8 TiB disk: peak RSS ${full.maxRssMiB.toFixed(0)} MiB`);
    t.is(full.bytesRead, 4 * MiB);
    t.true(full.maxRssMiB < 512, `peak RSS ${full.maxRssMiB} MiB`);
    const h2 = await openFile(img, 'r+');
    await h2.write(Buffer.alloc(4096, 1), 0, 4096, size - 8192);
    await h2.close();
    const incr = await go([{ offset: size - 8192, length: 4096 }]);
    t.log(`incremental of an 8 TiB disk: peak RSS ${incr.maxRssMiB.toFixed(0)} MiB`);
    t.true(incr.maxRssMiB < 512, `peak RSS ${incr.maxRssMiB} MiB`);
  } finally {
    await f.cleanup();
  }
});

test('a chunk table page that does not belong to its disk is refused', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open({ tablePageChunks: PAGE });
    const img = await writeImage(f.dir, 'disk.img', mixedImage(10 * CHUNK));
    const b1 = await backupDay(repo, img, 1);
    // Pages 0 and 1 swapped: each is a valid blob, in the wrong place.
    const [p0, p1, ...more] = b1.disk.tablePages!;
    const writer = await repo.startRestorePoint(meta('vm-swap', new Date(Date.UTC(2026, 0, 1))));
    await writer.addDisk({ ...b1.disk, tablePages: [p1, p0, ...more] });
    const { id } = await writer.commit();
    await t.throwsAsync(() => repo.restoreDisk(id, 'scsi0-0', join(f.dir, 'swapped.img')), { instanceOf: CorruptImageError, message: /does not match disk scsi0-0 \(page 0\)/ });
  } finally {
    await f.cleanup();
  }
});
