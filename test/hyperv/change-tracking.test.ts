/**
 * The engine's change tracking (VmChangeTracking, what runJob calls between the checkpoint and the
 * commit) with the Hyper-V driver on replayed RCT fixtures: every script is checked against the
 * recording, in the order a backup sends them.
 */
import test from 'ava';
import type { Checkpoint } from '../../core/contracts/driver.ts';
import { VmChangeTracking } from '../../core/engine/change-tracking.ts';
import { CP_ID, EDITIONS, replayDriver, sql01, SQL_ID } from './helpers.ts';

const checkpoint: Checkpoint = {
  id: CP_ID, name: 'stillpoint-job-20240305-0915-sql01', vmId: SQL_ID, vmName: 'sql01', driver: 'hv', createdAt: '2024-03-05T09:15:42.318Z',
  consistency: 'application', disks: [],
};
const PREVIOUS_POINT = 'Microsoft:8F3C2A1E-5B7D-4C9A-9E21-3D4F6A7B8C90\\RP-11111111-2222-4333-8444-555555555555';
/** The VM's previous restore point as the repository holds it: its manifest's reference point. */
const previous = {
  id: '20240304T091512Z-0a1b2c3d',
  referencePoint: { driver: 'hv', id: PREVIOUS_POINT, vmId: SQL_ID, disks: { 'SCSI 0:0': 'rctX:c2eb01d9:ccb1:405d:acb6:f0e76d055906:00000000' }, createdAt: '2024-03-04T09:15:12.000Z' },
};
const disks = sql01.disks.map((d) => ({ diskId: d.id, virtualSize: d.virtualSize }));
const previousDisk = (id: string) => ({ id, virtualSize: sql01.disks.find((d) => d.id === id)!.virtualSize });

for (const edition of EDITIONS) {
  const ps = `PowerShell ${edition}`;

  test(`${ps}: a backup's RCT: changed ranges while the checkpoint exists, the checkpoint converted, the previous point destroyed after the commit`, async (t) => {
    const { driver, runner } = replayDriver('rct-backup', edition);
    const warnings: string[] = [];
    const tracking = new VmChangeTracking(driver, sql01, (w) => warnings.push(w));
    const changes = await tracking.plan(previous, disks, previousDisk);
    t.deepEqual(changes.get('SCSI 0:0'), {
      changed: [{ offset: 1048576, length: 2097152 }, { offset: 2147483648, length: 67108864 }, { offset: 107374182400, length: 4194304 }],
    });
    t.deepEqual(changes.get('SCSI 0:1'), {
      changed: null,
      reason: `reference point ${PREVIOUS_POINT} of restore point ${previous.id} does not track this disk`,
    }, 'a disk the previous reference point lacks is read whole (the driver is not asked)');

    const created = await tracking.createPoint(checkpoint);
    t.deepEqual(created, {
      driver: 'hv',
      id: 'Microsoft:8F3C2A1E-5B7D-4C9A-9E21-3D4F6A7B8C90\\RP-8D2F4B6E-0A1C-4E3F-9B5D-7F1A3C5E7B9D',
      vmId: SQL_ID,
      disks: {
        'SCSI 0:0': 'rctX:c2eb01d9:ccb1:405d:acb6:f0e76d055906:00000001',
        'SCSI 0:1': 'rctX:5a0f3b1e:77d2:4c51:9e0a:3b8f1d6c2e47:00000001',
      },
      createdAt: checkpoint.createdAt,
    });
    t.is(tracking.keep(true), created, 'the new restore point keeps the new reference point');
    await tracking.committed(true);
    runner.assertDone();
    t.deepEqual(warnings, []);
  });

  test(`${ps}: a reset RCT id reads the disk whole, and says why`, async (t) => {
    const { driver, runner } = replayDriver('rct-reset', edition);
    const tracking = new VmChangeTracking(driver, sql01, (w) => t.fail(w));
    const changes = await tracking.plan(previous, disks.slice(0, 1), previousDisk);
    runner.assertDone();
    t.deepEqual(changes.get('SCSI 0:0'), {
      changed: null,
      reason: `change tracking was reset: driver "hv" knows no changes since reference point ${PREVIOUS_POINT} of restore point ${previous.id}`,
    });
  });
}

test('checkpoint-vm cannot make reference points: a warning that says what to do, and the restore point keeps none', async (t) => {
  const { driver, runner } = replayDriver('rct-reset', '7', { checkpointMethod: 'checkpoint-vm' });
  const warnings: string[] = [];
  const tracking = new VmChangeTracking(driver, sql01, (w) => warnings.push(w));
  t.is(await tracking.createPoint(checkpoint), undefined);
  t.is(warnings.length, 1);
  t.regex(warnings[0], /could not turn checkpoint stillpoint-job-20240305-0915-sql01 into a reference point \(the next backup reads every allocated extent\): .*reference points need recovery checkpoints.*checkpointMethod to "recovery"/);
  t.is(tracking.keep(true), undefined, 'the restore point keeps no reference point');
  t.throws(() => runner.assertDone(), undefined, 'no script was sent');
});
