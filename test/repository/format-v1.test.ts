import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { RawFileDisk } from '../../core/repository/index.ts';
import { keys } from '../../core/repository/format.ts';
import { fixture, meta, MiB, mixedImage, writeImage } from './helpers.ts';

/**
 * A format-1 repository (one storage object per chunk, before packs) made the way version 1 laid
 * it out: every chunk blob under `chunks/<xx>/<name>` — the same sealed blob a pack holds, since a
 * blob is bound to its chunk's name, not to its pack — and `config` saying version 1.
 */
test('a format-1 repository (a chunk per object): restored and verified as it is; the first backup into it upgrades it to packs', async (t) => {
  const f = await fixture();
  try {
    const image = mixedImage(3 * MiB);
    // Version 1 named chunks with HMAC-SHA-256.
    let repo = await f.open({ passphrase: 'pw', chunkHash: 'sha256' });
    t.is(repo.data.config.chunkHash, 'hmac-sha256');
    const w = await repo.startRestorePoint(meta('vm-1', new Date('2026-01-01T00:00:00Z')));
    const src = await RawFileDisk.open(await writeImage(f.dir, 'v1.img', image));
    await w.storeDisk({ id: 'scsi0-0', virtualSize: image.length, logicalSectorSize: 512 }, src, {});
    await src.close();
    const { id: oldId } = await w.commit();
    await repo.data.close();

    // Lay the repository out as format 1.
    const packs = [...(await collect(f.storage.list(keys.packIndexPrefix)))];
    let chunks = 0;
    for (const [pack, entries] of repo.data.packIndex.packs) {
      const blob = await f.storage.get(keys.pack(pack));
      for (const e of entries) {
        await f.storage.put(keys.chunk(e.id), blob.subarray(e.offset, e.offset + e.length));
        chunks++;
      }
      await f.storage.delete(keys.pack(pack));
    }
    for (const key of packs) await f.storage.delete(key);
    const config = JSON.parse((await f.storage.get(keys.config)).toString('utf8'));
    await f.storage.put(keys.config, Buffer.from(JSON.stringify({ ...config, version: 1 }, null, 2)));
    t.true(chunks > 0);
    t.deepEqual(await collect(f.storage.list(keys.packsPrefix)), []);

    // Read as it is: restore and a deep verify.
    repo = await f.open({ passphrase: 'pw' });
    const out = join(f.dir, 'old.img');
    await repo.restoreDisk(oldId, 'scsi0-0', out);
    t.true((await readFile(out)).equals(image));
    const report = await repo.verify({ deep: true });
    t.true(report.ok, JSON.stringify(report.damagedChunks));
    t.is(report.chunksChecked, report.chunksReferenced);

    // The first backup upgrades the config to version 2 and stores new chunks in packs.
    const changed = Buffer.concat([image.subarray(0, 2 * MiB), mixedImage(MiB).fill(9, 0, 4096)]);
    const w2 = await repo.startRestorePoint(meta('vm-1', new Date('2026-01-02T00:00:00Z')));
    const src2 = await RawFileDisk.open(await writeImage(f.dir, 'v1b.img', changed));
    await w2.storeDisk({ id: 'scsi0-0', virtualSize: changed.length, logicalSectorSize: 512 }, src2, {});
    await src2.close();
    const { id: newId } = await w2.commit();
    t.is(JSON.parse((await f.storage.get(keys.config)).toString('utf8')).version, 2);
    t.true((await collect(f.storage.list(keys.packsPrefix))).length > 0, 'new chunks went into packs');
    // Both restore points restore: the new one from old chunk objects and new packs together.
    await repo.restoreDisk(newId, 'scsi0-0', join(f.dir, 'new.img'));
    t.true((await readFile(join(f.dir, 'new.img'))).equals(changed));
    await repo.restoreDisk(oldId, 'scsi0-0', join(f.dir, 'old2.img'));
    t.true((await readFile(join(f.dir, 'old2.img'))).equals(image));
  } finally {
    await f.cleanup();
  }
});

async function collect(items: AsyncIterable<string> | Promise<string[]> | string[]): Promise<string[]> {
  const awaited = await items;
  if (Array.isArray(awaited)) return awaited;
  const out: string[] = [];
  for await (const item of awaited) out.push(item);
  return out;
}
