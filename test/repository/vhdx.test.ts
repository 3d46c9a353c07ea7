import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { fixture, meta, MiB } from './helpers.ts';

/** The VHDX library (native) is built by `npm run build:native`; under CI it must be there. */
async function loadVhdx() {
  try {
    const lib = await import('../../plugins/vhdx/index.ts');
    return lib;
  } catch (error) {
    if (process.env.CI === 'true') throw error;
    return null;
  }
}

test('a VHDX disk: only allocated blocks are read; restore to a new dynamic VHDX and to raw gives the same bytes', async (t) => {
  const lib = await loadVhdx();
  const f = await fixture();
  try {
    if (!lib) {
      t.log('the VHDX library cannot be loaded here (npm run build:native); skipped');
      t.pass();
      return;
    }
    const size = 256 * MiB;
    const src = join(f.dir, 'source.vhdx');
    await lib.createDynamic(src, { virtualSize: size, logicalSectorSize: 512, blockSize: 2 * MiB });
    const expected = Buffer.alloc(size);
    {
      const w = await lib.VhdxDisk.open(src, { writable: true }).catch((error: Error) => {
        if (process.env.CI === 'true') throw error;
        return null;
      });
      if (!w) {
        t.log('the native VHDX library is not built; skipped');
        t.pass();
        return;
      }
      for (const [offset, length] of [[0, 4096], [5 * MiB + 123, 300_000], [40 * MiB, 2 * MiB], [60 * MiB - 512, 512]]) {
        const data = randomBytes(length);
        await w.write(offset, data);
        data.copy(expected, offset);
      }
      await w.flush();
      await w.close();
    }
    const repo = await f.open({ chunkSize: 256 * 1024 });
    const disk = await lib.VhdxDisk.open(src);
    const writer = await repo.startRestorePoint(meta('vhdx-vm'));
    const r = await writer.storeDisk({ id: 'scsi0-0', virtualSize: disk.virtualSize, logicalSectorSize: disk.logicalSectorSize }, disk, {});
    await disk.close();
    t.true(r.bytesRead <= 5 * 2 * MiB, `only allocated VHDX blocks are read (${r.bytesRead} bytes)`);
    const { id } = await writer.commit();

    const outVhdx = join(f.dir, 'restored.vhdx');
    await repo.restoreDisk(id, 'scsi0-0', outVhdx);
    const restored = await lib.VhdxDisk.open(outVhdx);
    t.is(restored.virtualSize, size);
    const got = Buffer.alloc(size);
    await restored.read(0, got);
    const allocated = (await restored.allocation()).filter((e) => e.kind === 'data').reduce((n, e) => n + e.length, 0);
    await restored.close();
    t.true(got.equals(expected), 'the restored VHDX holds the same bytes');
    t.true(allocated <= 64 * MiB, `zero chunks are not written into the restored VHDX (${allocated} bytes allocated of ${size})`);

    const outRaw = join(f.dir, 'restored.img');
    await repo.restoreDisk(id, 'scsi0-0', outRaw, { format: 'raw' });
    t.true((await readFile(outRaw)).equals(expected));
  } finally {
    await f.cleanup();
  }
});
