import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { RawFileDisk } from '../../core/repository/index.ts';
import { fixture, meta, MiB, mixedImage, writeImage } from './helpers.ts';

const run = promisify(execFile);

async function probe(repoPath: string, waitMs: number): Promise<{ ok: boolean; message?: string; id?: string; waitedMs: number }> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'lock-probe.ts'), repoPath, String(waitMs)], { cwd: join(import.meta.dirname, '../..') });
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
}

test('restore points written concurrently by one process both commit and restore; another process is refused, or waits and then writes', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const imageA = mixedImage(3 * MiB);
    const imageB = mixedImage(2 * MiB + 4096);
    const a = await writeImage(f.dir, 'a.img', imageA);
    const b = await writeImage(f.dir, 'b.img', imageB);
    const [wa, wb] = await Promise.all([repo.startRestorePoint(meta('vm-a')), repo.startRestorePoint(meta('vm-b'))]);
    t.is(repo.writerLock.writers, 2, 'both restore points are open at once');

    // Another process is refused while this one writes.
    const refused = await probe(join(f.dir, 'repo'), 0);
    t.false(refused.ok);
    t.regex(refused.message!, /locked by backup of VM VM vm-a.*pid/);

    const store = async (w: typeof wa, path: string) => {
      const src = await RawFileDisk.open(path);
      try {
        await w.storeDisk({ id: 'scsi0-0', virtualSize: src.virtualSize, logicalSectorSize: 512 }, src, {});
      } finally {
        await src.close();
      }
    };
    await Promise.all([store(wa, a), store(wb, b)]);
    // A process that waits for the lock gets it once the last restore point is committed.
    const waiting = probe(join(f.dir, 'repo'), 20_000);
    const { id: ida } = await wa.commit();
    t.not(await f.storage.head('locks/writer'), null, 'the lock is held while a restore point is still open');
    await new Promise((r) => setTimeout(r, 300));
    const { id: idb } = await wb.commit();
    t.is(await f.storage.head('locks/writer'), null, 'the last commit releases the lock');
    const waited = await waiting;
    t.true(waited.ok, waited.message);

    for (const [id, expected] of [[ida, imageA], [idb, imageB]] as const) {
      const out = join(f.dir, `r-${id}.img`);
      await repo.restoreDisk(id, 'scsi0-0', out);
      t.true((await readFile(out)).equals(expected), `restore point ${id} restores its own disk`);
    }
    t.is((await repo.list()).length, 3);
  } finally {
    await f.cleanup();
  }
});

test('gc while restore points are written concurrently deletes nothing they reference', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const old = mixedImage(2 * MiB);
    const first = await repo.startRestorePoint(meta('vm-old'));
    const src0 = await RawFileDisk.open(await writeImage(f.dir, 'old.img', old));
    await first.storeDisk({ id: 'scsi0-0', virtualSize: old.length, logicalSectorSize: 512 }, src0, {});
    await src0.close();
    await first.commit();
    // Drop that restore point: its chunks are now unreferenced (gc candidates).
    for (const s of await repo.list()) await f.storage.delete(`restore-points/${s.id}`);
    t.deepEqual(await repo.list(), []);

    const [w1, w2] = await Promise.all([repo.startRestorePoint(meta('vm-1')), repo.startRestorePoint(meta('vm-2'))]);
    // One writer reuses the unreferenced chunks (dedup by head), the other stores new ones ...
    const fresh = mixedImage(2 * MiB);
    const store = async (w: typeof w1, name: string, image: Buffer) => {
      const src = await RawFileDisk.open(await writeImage(f.dir, name, image));
      try {
        await w.storeDisk({ id: 'scsi0-0', virtualSize: old.length, logicalSectorSize: 512 }, src, {});
      } finally {
        await src.close();
      }
    };
    const storing = Promise.all([store(w1, 'w1.img', old), store(w2, 'w2.img', fresh)]);
    // ... while gc runs: it must defer (same process) and delete nothing.
    const during = await repo.gc();
    t.true(during.deferred, 'gc defers while this process writes restore points');
    t.true(during.candidates > 0);
    t.regex(during.reason!, /locked by backup of VM/);
    await storing;
    const { id: id1 } = await w1.commit();
    // One writer committed, the other (its new chunks unreferenced yet) still open: still deferred.
    const between = await repo.gc();
    t.true(between.candidates > 0 && between.deferred);
    const { id: id2 } = await w2.commit();
    const after = await repo.gc();
    t.false(after.deferred);
    t.is(after.deletedChunks, 0, 'every chunk is referenced by a committed restore point');
    t.true((await repo.verify({ deep: true })).ok);
    for (const [id, expected] of [[id1, old], [id2, fresh]] as const) {
      const out = join(f.dir, `r-${id}.img`);
      await repo.restoreDisk(id, 'scsi0-0', out);
      t.true((await readFile(out)).equals(expected));
    }
  } finally {
    await f.cleanup();
  }
});

test('restore points written at once that share content store each chunk once (one waits for the other\'s pack to be durable)', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open({ packSize: 128 * 1024 });
    const image = mixedImage(4 * MiB);
    const path = await writeImage(f.dir, 'same.img', image);
    const write = async (vm: string) => {
      const w = await repo.startRestorePoint(meta(vm));
      const src = await RawFileDisk.open(path);
      try {
        await w.storeDisk({ id: 'scsi0-0', virtualSize: image.length, logicalSectorSize: 512 }, src, {});
      } finally {
        await src.close();
      }
      return (await w.commit()).id;
    };
    const ids = await Promise.all([write('vm-1'), write('vm-2'), write('vm-3')]);
    const stored = [...repo.data.packIndex.packs.values()].flat().map((e) => e.id);
    t.is(stored.length, new Set(stored).size, 'no chunk is stored twice');
    t.true((await repo.verify({ deep: true })).ok);
    for (const id of ids) {
      const out = join(f.dir, `r-${id}.img`);
      await (await f.open()).restoreDisk(id, 'scsi0-0', out);
      t.true((await readFile(out)).equals(image));
    }
  } finally {
    await f.cleanup();
  }
});
