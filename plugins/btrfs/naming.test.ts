import test from 'ava';
import { formatSnapshotName, parseSnapshotName } from './naming.ts';

test('a snapshot name round-trips job id, volume and time', (t) => {
  const parts = { jobId: 'nightly/2026@11:24 x', volume: 'Cluster Storage@1', createdAt: '2026-11-24T20:23:11.123Z', nonce: 'a1b2c3' };
  const name = formatSnapshotName(parts);
  t.true(name.startsWith('stillpoint@'));
  t.false(name.includes('/'));
  t.is(name.split('@').length, 5);
  t.deepEqual(parseSnapshotName(name), parts);
});

test('names that are not Stillpoint snapshots do not parse', (t) => {
  for (const name of ['home', 'stillpoint', 'stillpoint@job@vol@20261124T202311.123Z', 'stillpoint@job@vol@notatime@abc',
    'stillpoint@job@vol@20261124T202311.123Z@ab-c', 'stillpoint@@vol@20261124T202311.123Z@abc', 'stillpoint@%E0%A4%A@v@20261124T202311.123Z@abc']) {
    t.is(parseSnapshotName(name), undefined, name);
  }
});

test('a volume name starting with a dot is encoded so the name never looks hidden or relative', (t) => {
  const name = formatSnapshotName({ jobId: '.j', volume: '..', createdAt: '2026-01-01T00:00:00.000Z', nonce: 'x' });
  t.false(name.includes('@.'));
  t.is(parseSnapshotName(name)?.volume, '..');
  t.is(parseSnapshotName(name)?.jobId, '.j');
});

test('a name longer than btrfs allows is refused with the job and volume named', (t) => {
  const error = t.throws(() => formatSnapshotName({ jobId: 'j'.repeat(300), volume: 'v', createdAt: '2026-01-01T00:00:00.000Z', nonce: 'x' }));
  t.regex(error!.message, /more than btrfs allows/);
});
