import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { RawFileDisk } from '../../core/repository/index.ts';
import { PackBuilder } from '../../core/repository/packs.ts';
import { fixture, meta, MiB, mixedImage, writeImage } from './helpers.ts';

test('gc of packs while a backup runs: deferred, then dead packs deleted, mostly dead ones repacked, orphans removed; every restore point still restores', async (t) => {
  const f = await fixture();
  try {
    // 64 KiB chunks in packs of ~256 KiB: a few MiB of disk make many packs.
    const repo = await f.open({ packSize: 256 * 1024, passphrase: 'pw' });
    const backup = async (vm: string, image: Buffer, name: string, time: string) => {
      const w = await repo.startRestorePoint(meta(vm, new Date(time)));
      const src = await RawFileDisk.open(await writeImage(f.dir, name, image));
      try {
        await w.storeDisk({ id: 'scsi0-0', virtualSize: image.length, logicalSectorSize: 512 }, src, {});
      } finally {
        await src.close();
      }
      return (await w.commit()).id;
    };
    const keep = mixedImage(2 * MiB);
    const dropped = Buffer.concat([mixedImage(3 * MiB), randomBytes(MiB)]);
    // A disk that shares a little with `dropped`: its packs become mostly dead once `dropped` goes.
    const mixed = Buffer.concat([dropped.subarray(0, 256 * 1024), mixedImage(MiB)]);
    const keepId = await backup('vm-keep', keep, 'keep.img', '2026-05-01T00:00:00Z');
    const droppedId = await backup('vm-drop', dropped, 'drop.img', '2026-05-01T00:00:00Z');
    await backup('vm-drop', mixed, 'mixed.img', '2026-05-02T00:00:00Z');
    const packsBefore = repo.data.packIndex.packs.size;

    // An orphan: a pack whose index was never written (a backup stopped between the two puts).
    await f.storage.put('packs/ab/ab000000000000000000000000000000', Buffer.from('half a backup'));

    // Drop the first restore point of vm-drop.
    await f.storage.delete(`restore-points/${droppedId}`);
    // A backup starts and re-uses some of the dropped content (found in the pack index) ...
    const writer = await repo.startRestorePoint(meta('vm-reuse', new Date('2026-05-03T00:00:00Z')));
    const reused = dropped.subarray(MiB, 2 * MiB);
    const src = await RawFileDisk.open(await writeImage(f.dir, 'reuse.img', reused));
    await writer.storeDisk({ id: 'scsi0-0', virtualSize: reused.length, logicalSectorSize: 512 }, src, {});
    await src.close();
    // ... while gc runs: deferred, nothing deleted.
    const during = await repo.gc();
    t.true(during.deferred);
    t.true(during.candidates > 0);
    t.is(during.deletedChunks + during.deletedPacks + during.repackedPacks, 0);
    t.true(await f.storage.head('packs/ab/ab000000000000000000000000000000') !== null);
    const reuseId = (await writer.commit()).id;

    const gc = await repo.gc();
    t.false(gc.deferred);
    t.true(gc.deletedPacks >= 3, `dead packs and the orphan deleted (${gc.deletedPacks})`);
    t.true(gc.deletedChunks > 0);
    t.is(await f.storage.head('packs/ab/ab000000000000000000000000000000'), null, 'the orphan pack is gone');
    t.true(repo.data.packIndex.packs.size < packsBefore, `fewer packs (${repo.data.packIndex.packs.size} < ${packsBefore})`);
    const deep = await repo.verify({ deep: true });
    t.true(deep.ok, JSON.stringify(deep.damaged));

    // Restore from a fresh process's view (a second Repository), and from this one.
    const other = await f.open({ passphrase: 'pw' });
    for (const [id, expected] of [[keepId, keep], [reuseId, reused]] as const) {
      for (const r of [repo, other]) {
        const out = join(f.dir, `r-${id}.img`);
        await r.restoreDisk(id, 'scsi0-0', out, { overwrite: true });
        t.true((await readFile(out)).equals(expected), `restore point ${id} restores after gc`);
      }
    }
    const mixedLatest = await repo.latest('vm-drop');
    const out = join(f.dir, 'r-mixed.img');
    await other.restoreDisk(mixedLatest!.id, 'scsi0-0', out);
    t.true((await readFile(out)).equals(mixed));
    const again = await repo.gc();
    t.is(again.deletedChunks + again.deletedPacks, 0, 'nothing more to collect');
  } finally {
    await f.cleanup();
  }
});

test('gc repacks a mostly dead pack: live blobs move to a new pack (durable with its index) before the old one goes', async (t) => {
  const f = await fixture();
  try {
    // One pack holds the whole disk (a large pack).
    const repo = await f.open({ packSize: 64 * MiB });
    const small = mixedImage(256 * 1024);
    const whole = Buffer.concat([small, randomBytes(3 * MiB)]);
    const w = await repo.startRestorePoint(meta('vm-a'));
    const src1 = await RawFileDisk.open(await writeImage(f.dir, 'whole.img', whole));
    await w.storeDisk({ id: 'whole', virtualSize: whole.length, logicalSectorSize: 512 }, src1, {});
    await src1.close();
    const first = (await w.commit()).id;
    t.is(repo.data.packIndex.packs.size, 1);
    // A second restore point keeps only the first 256 KiB of content (found in that pack).
    const w2 = await repo.startRestorePoint(meta('vm-b'));
    const src = await RawFileDisk.open(await writeImage(f.dir, 'small.img', small));
    await w2.storeDisk({ id: 'small', virtualSize: small.length, logicalSectorSize: 512 }, src, {});
    await src.close();
    const second = (await w2.commit()).id;
    const packsBefore = [...repo.data.packIndex.packs.keys()];
    await f.storage.delete(`restore-points/${first}`);
    const gc = await repo.gc();
    t.is(gc.repackedPacks, 1, 'the mostly dead pack is repacked');
    t.is(gc.deletedChunks, 48, 'its dead chunks are gone');
    t.false([...repo.data.packIndex.packs.keys()].some((p) => packsBefore.includes(p)), 'the old packs are gone');
    for (const p of packsBefore) t.is(await f.storage.head(`packs/${p.slice(0, 2)}/${p}`), null);
    const out = join(f.dir, 'r.img');
    await (await f.open()).restoreDisk(second, 'small', out);
    t.true((await readFile(out)).equals(small));
    t.true((await repo.verify({ deep: true })).ok);
  } finally {
    await f.cleanup();
  }
});

test('gc deletes a pack whose live chunks are all held by another pack too (a repack that stopped before deleting it)', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open({ packSize: 64 * MiB, passphrase: 'pw' });
    const image = mixedImage(2 * MiB);
    const w = await repo.startRestorePoint(meta('vm-a'));
    const src = await RawFileDisk.open(await writeImage(f.dir, 'a.img', image));
    await w.storeDisk({ id: 'a', virtualSize: image.length, logicalSectorSize: 512 }, src, {});
    await src.close();
    const id = (await w.commit()).id;
    const index = repo.data.packIndex;
    const [original] = [...index.packs.keys()];
    // What a repack leaves when it stops after storing the new pack: every live blob twice.
    const whole = await f.storage.get(`packs/${original.slice(0, 2)}/${original}`);
    const copy = new PackBuilder(repo.storage, repo.data.codec, index, 64 * MiB);
    for (const e of index.packs.get(original)!) {
      await copy.ready();
      copy.add(e.id, whole.subarray(e.offset, e.offset + e.length));
    }
    await copy.finish();
    t.is(index.packs.size, 2);

    const gc = await repo.gc();
    t.is(gc.deletedPacks, 1, 'one of the two copies is deleted');
    t.is(gc.repackedPacks, 0);
    t.is(index.packs.size, 1);
    t.is((await repo.storage.list('packs/')).length, 1);
    t.true((await repo.verify({ deep: true })).ok);
    const out = join(f.dir, 'r.img');
    await (await f.open({ passphrase: 'pw' })).restoreDisk(id, 'a', out);
    t.true((await readFile(out)).equals(image));
    t.is((await repo.gc()).candidates, 0, 'nothing left to collect');
  } finally {
    await f.cleanup();
  }
});
