import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { CorruptImageError } from '../../core/errors.ts';
import { RawFileDisk } from '../../core/repository/index.ts';
import { fixture, meta, MiB, mixedImage, writeImage } from './helpers.ts';

test('chunks go into packs in disk order, and a restore reads neighbouring chunks with one ranged read; restores at once; a damaged chunk in a run is named alone', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open({ passphrase: 'pw', packSize: 4 * MiB });
    // 8 MiB of incompressible data (every chunk stored, of varying sealed sizes) and text.
    const image = Buffer.concat([randomBytes(4 * MiB), mixedImage(4 * MiB)]);
    const w = await repo.startRestorePoint(meta());
    const src = await RawFileDisk.open(await writeImage(f.dir, 'd.img', image));
    await w.storeDisk({ id: 'scsi0-0', virtualSize: image.length, logicalSectorSize: 512 }, src, {});
    await src.close();
    const { id } = await w.commit();

    // Disk order: each pack lists its chunks in the order of the disk, back to back.
    const manifest = await repo.manifest(id);
    const table = repo.data.tableReader(manifest.disks[0]);
    let previous: { pack: string; end: number; index: number } | null = null;
    for (let i = 0; i < manifest.disks[0].chunkCount; i++) {
      const chunk = await table.entry(i);
      if (chunk === null) continue;
      const at = repo.data.packIndex.get(chunk)!;
      if (previous && previous.pack === at.pack) {
        t.is(at.offset, previous.end, `chunk ${i} follows chunk ${previous.index} in its pack`);
      }
      previous = { pack: at.pack, end: at.offset + at.length, index: i };
    }

    // Ranged reads: far fewer than chunks.
    let ranged = 0;
    const getRange = f.storage.getRange.bind(f.storage);
    f.storage.getRange = (key, offset, length) => {
      ranged++;
      return getRange(key, offset, length);
    };
    await repo.restoreDisk(id, 'scsi0-0', join(f.dir, 'out.img'));
    t.true((await readFile(join(f.dir, 'out.img'))).equals(image));
    const chunks = manifest.disks[0].dataChunks;
    t.log(`${chunks} chunks restored with ${ranged} ranged reads`);
    t.true(ranged * 4 <= chunks, `${ranged} ranged reads for ${chunks} chunks`);

    // Restores at once in one process each decode into their own slab.
    const outs = [1, 2, 3].map((n) => join(f.dir, `at-once-${n}.img`));
    await Promise.all(outs.map((out) => repo.restoreDisk(id, 'scsi0-0', out)));
    for (const out of outs) t.true((await readFile(out)).equals(image), out);

    // Damage one chunk in the middle of a pack: the restore names that chunk, not its neighbours.
    const victim = (await table.entry(20))!;
    const at = repo.data.packIndex.get(victim)!;
    const packPath = join(f.storage.root, 'packs', at.pack.slice(0, 2), at.pack);
    const pack = await readFile(packPath);
    pack[at.offset + Math.floor(at.length / 2)] ^= 0xff;
    await writeFile(packPath, pack);
    const error = await t.throwsAsync(() => repo.restoreDisk(id, 'scsi0-0', join(f.dir, 'bad.img')), { instanceOf: CorruptImageError });
    t.true(error!.message.includes(`chunk ${victim}`), error!.message);
  } finally {
    await f.cleanup();
  }
});
