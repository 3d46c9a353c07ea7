import test from 'ava';
import { applyRetention, isoWeek } from './retention.ts';
import type { Manifest } from './format.ts';

function rp(id: string, time: string, vm = 'vm-1', job = 'nightly'): Manifest {
  return {
    format: 'stillpoint-restore-point', version: 1, id, job, vm: { id: vm, name: vm, driver: 'lab' },
    consistency: { method: 'online', level: 'application', reason: '' }, time, committedAt: time, previous: null, disks: [],
  };
}

const points = [
  rp('20260101T000000Z-00000001', '2026-01-01T10:00:00Z'),
  rp('20260101T000000Z-00000002', '2026-01-01T22:00:00Z'),
  rp('20260102T000000Z-00000003', '2026-01-02T10:00:00Z'),
  rp('20260110T000000Z-00000004', '2026-01-10T10:00:00Z'),
  rp('20260201T000000Z-00000005', '2026-02-01T10:00:00Z'),
  rp('20260202T000000Z-00000006', '2026-02-02T10:00:00Z'),
];

const kept = (r: ReturnType<typeof applyRetention>) => r.keep.map((k) => k.manifest.id.slice(-1)).sort().join('');

test('keep-last keeps the newest N per VM', (t) => {
  t.is(kept(applyRetention(points, { keepLast: 2 })), '56');
  const other = [...points, rp('20250101T000000Z-0000000a', '2025-01-01T00:00:00Z', 'vm-2')];
  t.is(kept(applyRetention(other, { keepLast: 1 })), '6a');
});

test('keep-daily keeps the newest of each of the last N days', (t) => {
  t.is(kept(applyRetention(points, { keepDaily: 4 })), '3456');
  t.is(kept(applyRetention(points, { keepDaily: 10 })), '23456', 'two on one day: the later one');
});

test('keep-weekly and keep-monthly bucket by ISO week and month; rules combine', (t) => {
  t.is(kept(applyRetention(points, { keepMonthly: 2 })), '46');
  t.is(kept(applyRetention(points, { keepWeekly: 3 })), '456', 'Sun 1 Feb and Mon 2 Feb are in different ISO weeks');
  t.is(kept(applyRetention(points, { keepLast: 1, keepMonthly: 2 })), '46');
  const r = applyRetention(points, { keepLast: 1, keepMonthly: 2 });
  t.deepEqual(r.keep.find((k) => k.manifest.id.endsWith('6'))!.reasons, ['last 1', 'monthly 2026-02']);
});

test('a policy without rules keeps everything', (t) => {
  t.is(applyRetention(points, {}).remove.length, 0);
});

test('ISO weeks', (t) => {
  t.is(isoWeek(new Date('2026-01-01T00:00:00Z')), '2026-W01');
  t.is(isoWeek(new Date('2027-01-01T00:00:00Z')), '2026-W53');
  t.is(isoWeek(new Date('2024-12-30T00:00:00Z')), '2025-W01');
});
