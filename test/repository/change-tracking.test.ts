/** The repository's part of change tracking: the reason of a full read, and the reference point kept in the manifest. */
import test from 'ava';
import { RawFileDisk } from '../../core/repository/index.ts';
import { fixture, meta, MiB, mixedImage, writeImage } from './helpers.ts';

test('a full read records the reason it was given; commit keeps the reference point in the manifest', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const img = await writeImage(f.dir, 'disk.img', mixedImage(2 * MiB));
    const store = async (opts: { changed?: null; fullReadReason?: string }, referencePoint?: unknown) => {
      const writer = await repo.startRestorePoint(meta('vm-1', new Date()));
      const source = await RawFileDisk.open(img);
      try {
        const result = await writer.storeDisk({ id: 'scsi0-0', virtualSize: source.virtualSize, logicalSectorSize: 512 }, source, opts);
        const { id } = await writer.commit(referencePoint === undefined ? {} : { referencePoint });
        return { id, result };
      } finally {
        await source.close();
      }
    };
    const first = await store({ fullReadReason: 'ignored: there is nothing to compare with' }, { driver: 'lab', id: 'rp-1', vmId: 'vm-1', disks: { 'scsi0-0': 't:0' } });
    t.regex(first.result.reason!, /^full read: no previous restore point of this disk$/, 'the repository\'s own reason wins when there is no base');
    t.deepEqual((await repo.manifest(first.id)).referencePoint, { driver: 'lab', id: 'rp-1', vmId: 'vm-1', disks: { 'scsi0-0': 't:0' } });

    const second = await store({ changed: null, fullReadReason: 'change tracking was reset (the driver knows no changes since reference point rp-1)' });
    t.true(second.result.fullRead);
    t.is(second.result.reason, 'full read: change tracking was reset (the driver knows no changes since reference point rp-1); unchanged chunks were skipped by hash');
    t.is(second.result.bytesStored < 4096 * 4, true, 'unchanged chunks were skipped by hash');
    const m = await repo.manifest(second.id);
    t.is(m.referencePoint, undefined, 'no reference point given, none stored');
    t.is(m.disks[0].reason, second.result.reason, 'the manifest says why everything was read');
  } finally {
    await f.cleanup();
  }
});
