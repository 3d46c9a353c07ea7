import test from 'ava';
import type { ByteRange, ReferencePoint } from '../contracts/driver.ts';
import { changeBase, changedDataBytes, diskChanges, invalidRanges, readMode, toStoredReferencePoint, type ChangeBase } from './change-tracking.ts';

const lab = { name: 'lab', tracks: true };
const point = toStoredReferencePoint('lab', { id: 'rp-1', vmId: 'vm-1', disks: { 'SCSI 0:0': 'trk:4096' } }, '2026-01-01T00:00:00.000Z');
const previous = { id: '20260101T000000Z-aaaaaaaa', referencePoint: point };

test('the base of an incremental: the previous restore point with a usable reference point, or why not', (t) => {
  t.deepEqual(changeBase(lab, 'vm-1', previous), { previousId: previous.id, point });
  const why = (b: ChangeBase) => ('reason' in b ? b.reason : '(has a base)');
  t.is(why(changeBase({ name: 'files', tracks: false }, 'vm-1', previous)), 'driver "files" has no change tracking');
  t.is(why(changeBase(lab, 'vm-1', null)), 'no previous restore point of this VM');
  t.regex(why(changeBase(lab, 'vm-1', { id: 'p0' })), /^the previous restore point p0 has no reference point/);
  t.regex(why(changeBase(lab, 'vm-1', { id: 'p0', referencePoint: { id: 7 } })), /reference point of the previous restore point p0 is not one Stillpoint can use \(.*driver.*id/);
  t.is(why(changeBase({ name: 'hv', tracks: true }, 'vm-1', previous)), `the previous restore point ${previous.id} was tracked by driver "lab", not "hv"`);
  t.regex(why(changeBase(lab, 'vm-2', previous)), /belongs to VM vm-1, not vm-2/);
});

test('changes of one disk: the driver\'s ranges, or a full read with the reason (reset, error, bad ranges, size, missing disk)', async (t) => {
  const base = changeBase(lab, 'vm-1', previous);
  const disk = { diskId: 'SCSI 0:0', virtualSize: 1 << 20 };
  const prev = { virtualSize: 1 << 20 };
  const asked: Array<[string, ReferencePoint]> = [];
  const answer = (result: ByteRange[] | null | Error) => ({
    name: 'lab',
    async changedRanges(diskId: string, since: ReferencePoint) {
      asked.push([diskId, since]);
      if (result instanceof Error) throw result;
      return result;
    },
  });
  t.deepEqual(await diskChanges(answer([{ offset: 0, length: 4096 }, { offset: 8192, length: 0 }]), base, disk, prev), { changed: [{ offset: 0, length: 4096 }] }, 'empty ranges are dropped');
  t.deepEqual(asked[0], ['SCSI 0:0', { id: 'rp-1', vmId: 'vm-1', disks: { 'SCSI 0:0': 'trk:4096' } }], 'the driver gets its own reference point back');
  t.deepEqual(await diskChanges(answer([]), base, disk, prev), { changed: [] }, 'nothing changed: nothing to read');

  const reset = await diskChanges(answer(null), base, disk, prev);
  t.is(reset.changed, null);
  t.is(reset.reason, `change tracking was reset: driver "lab" knows no changes since reference point rp-1 of restore point ${previous.id}`);
  t.regex((await diskChanges(answer(new Error('WinRM timed out')), base, disk, prev)).reason!, /asking driver "lab" for the changed ranges since reference point rp-1 .* failed: WinRM timed out/);
  t.regex((await diskChanges(answer([{ offset: (1 << 20) - 10, length: 4096 }]), base, disk, prev)).reason!, /returned changed ranges the engine cannot use: range .* ends past the disk's 1048576 bytes/);

  const calls = asked.length;
  t.regex((await diskChanges(answer([]), base, disk, null)).reason!, /the previous restore point .* lacks this disk/);
  t.regex((await diskChanges(answer([]), base, disk, { virtualSize: 1 << 19 })).reason!, /the disk's size changed since the previous restore point \(524288 -> 1048576 bytes\)/);
  t.regex((await diskChanges(answer([]), base, { ...disk, diskId: 'SCSI 0:1' }, prev)).reason!, /reference point rp-1 .* does not track this disk/);
  t.is((await diskChanges(answer([]), changeBase(lab, 'vm-1', null), disk, prev)).reason, 'no previous restore point of this VM');
  t.is(asked.length, calls, 'the driver is not asked when its answer could not be used');
});

test('ranges a driver returns are checked', (t) => {
  t.is(invalidRanges([{ offset: 0, length: 10 }], 10), undefined);
  t.regex(invalidRanges([{ offset: -1, length: 10 }], 100)!, /not a non-negative integer/);
  t.regex(invalidRanges([{ offset: 0.5, length: 10 }], 100)!, /not a non-negative integer/);
  t.regex(invalidRanges({}, 100)!, /not a list/);
});

test('the bytes of data an incremental reads: changed ranges within data extents, overlaps counted once', (t) => {
  const data = [{ offset: 0, length: 100 }, { offset: 200, length: 100 }];
  t.is(changedDataBytes([{ offset: 50, length: 200 }], data), 50 + 50);
  t.is(changedDataBytes([{ offset: 250, length: 10 }, { offset: 0, length: 10 }, { offset: 5, length: 10 }], data), 10 + 15);
  t.is(changedDataBytes([{ offset: 100, length: 100 }], data), 0, 'a change in unallocated space reads nothing');
});

test('a VM\'s read mode: incremental, or full read and why (once when the disks agree, per disk otherwise)', (t) => {
  const inc = { diskId: 'a', fullRead: false, reason: 'incremental: 3 changed range(s), 12288 bytes, since restore point x' };
  const full = (diskId: string, why: string) => ({ diskId, fullRead: true, reason: `full read: ${why}; unchanged chunks were skipped by hash` });
  t.is(readMode([]), undefined);
  t.is(readMode([inc, { ...inc, diskId: 'b' }]), 'incremental (changed ranges)');
  t.is(readMode([{ diskId: 'a', fullRead: true, reason: 'full read: no previous restore point of this disk' }]), 'full read: no previous restore point of this disk');
  t.is(readMode([full('a', 'change tracking was reset'), full('b', 'change tracking was reset')]), 'full read: change tracking was reset');
  t.is(readMode([inc, full('b', 'the disk\'s size changed')]), 'full read: disk b: the disk\'s size changed (other disks: changed ranges)');
});
