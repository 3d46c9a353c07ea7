import test from 'ava';
import { NotFoundError, StillpointError } from '../../core/errors.ts';
import { base, CP_ID, EDITIONS, GB, replayDriver, sql01, SQL_ID } from './helpers.ts';

const request = (policy: 'require' | 'prefer' | 'crash') => ({
  name: 'stillpoint-job-20240305-0915-sql01', kind: policy === 'crash' ? 'standard' as const : 'production' as const,
  productionOnly: policy === 'require', jobId: 'job-20240305-0915',
});

for (const edition of EDITIONS) {
  const ps = `PowerShell ${edition}`;

  test(`${ps}: standalone inventory: facts for prerequisites, VSS service matched by Id on a German host`, async (t) => {
    const { driver, runner } = replayDriver('standalone-inventory', edition);
    const inv = await driver.inventory();
    runner.assertDone();
    t.deepEqual(inv.hosts, [{ name: 'HV01', osBuild: 17763 }]);
    t.deepEqual(inv.clusters, []);
    const byName = Object.fromEntries(inv.vms.map((v) => [v.name, v]));
    t.deepEqual(Object.keys(byName).sort(), ['build01', 'legacy01', 'sql01', 'web01']);

    const sql = byName.sql01;
    t.is(sql.id, SQL_ID);
    t.is(sql.state, 'running');
    t.is(sql.configurationVersion, '9.0');
    t.is(sql.generation, 2);
    t.is(sql.guestOs, 'windows');
    t.is(sql.checkpointType, 'production');
    t.false(sql.clustered);
    t.deepEqual(sql.integration, { vssRequestor: { enabled: true, running: true } });
    t.deepEqual(sql.disks.map((d) => [d.id, d.volume, d.virtualSize, d.format, d.chain?.length]), [
      ['SCSI 0:0', 'D:\\', 127 * GB, 'vhdx', 1],
      ['SCSI 0:1', 'D:\\', 256 * GB, 'vhdx', 2],
    ]);
    t.is(sql.disks[1].chain?.[1], `${base}sql01-data.vhdx`);
    t.is(sql.configuration?.creationTime, '2023-11-02T08:14:51.377Z');
    t.is((sql.configuration?.vssIntegrationService as { name: string }).name, 'Sicherung (Volumeschattenkopie)');

    t.is(byName.web01.guestOs, 'linux');
    t.deepEqual(byName.web01.integration, { vssDaemon: true });
    t.is(byName.web01.disks[0].volume, 'E:\\');

    const build = byName.build01;
    t.is(build.guestOs, 'linux');
    t.deepEqual(build.integration, { vssDaemon: false }, 'VSS service enabled but No Contact: the daemon does not answer');
    t.is(build.checkpointType, 'productionOnly');
    t.is(build.disks.length, 1, 'the pass-through disk is not a virtual disk');
    t.deepEqual((build.configuration?.passthroughDisks as unknown[]).length, 1);

    const legacy = byName.legacy01;
    t.is(legacy.state, 'off');
    t.is(legacy.configurationVersion, '5.0');
    t.is(legacy.generation, 1);
    t.is(legacy.checkpointType, 'standard');
    t.is(legacy.disks[0].id, 'IDE 0:0');
    t.is(legacy.disks[0].format, 'vhd');
    t.deepEqual(legacy.integration, { vssRequestor: { enabled: true, running: false } });
    t.regex(String(legacy.configuration?.guestOsSource), /assumed/);
  });

  test(`${ps}: cluster inventory: every node's build and the functional level`, async (t) => {
    const { driver, runner } = replayDriver('cluster-inventory', edition);
    const inv = await driver.inventory();
    runner.assertDone();
    t.deepEqual(inv.hosts, [
      { name: 'HVC-N1', osBuild: 14393, cluster: 'HVC01' },
      { name: 'HVC-N2', osBuild: 9600, cluster: 'HVC01' },
    ]);
    t.deepEqual(inv.clusters, [{ name: 'HVC01', nodes: ['HVC-N1', 'HVC-N2'], functionalLevel: 8 }]);
    const [app] = inv.vms;
    t.true(app.clustered);
    t.is(app.cluster, 'HVC01');
    t.is(app.host, 'HVC-N1');
    t.is(app.configurationVersion, '8.0');
    t.is(app.disks[0].volume, 'C:\\ClusterStorage\\Volume1');
  });

  test(`${ps}: application-consistent recovery checkpoint: job polled, AVHDX and frozen chain of every disk`, async (t) => {
    const { driver, runner } = replayDriver('checkpoint-recovery-application', edition);
    const cp = await driver.createCheckpoint(sql01, request('prefer'));
    runner.assertDone();
    t.is(cp.id, CP_ID);
    t.is(cp.name, 'stillpoint-job-20240305-0915-sql01');
    t.is(cp.consistency, 'application');
    t.is(cp.consistencyReason, undefined);
    t.is(cp.createdAt, '2024-03-05T09:15:42.318Z');
    t.deepEqual(cp.disks, [
      { diskId: 'SCSI 0:0', avhdx: `${base}sql01-os_D7E1B2C3-4A5F-4E6D-9B8C-1A2B3C4D5E6F.avhdx`, chain: [`${base}sql01-os.vhdx`], volume: 'D:\\', virtualSize: 127 * GB },
      {
        diskId: 'SCSI 0:1', avhdx: `${base}sql01-data_D7E1B2C3-4A5F-4E6D-9B8C-1A2B3C4D5E6F.avhdx`,
        chain: [`${base}sql01-data_0A4C1E7B-93D2-4B6F-8E15-2C7D9F3A1B60.avhdx`, `${base}sql01-data.vhdx`], volume: 'D:\\', virtualSize: 256 * GB,
      },
    ]);
  });

  test(`${ps}: policy prefer falls back to a crash-consistent checkpoint and says why`, async (t) => {
    const { driver, runner } = replayDriver('checkpoint-recovery-fallback', edition);
    const cp = await driver.createCheckpoint(sql01, request('prefer'));
    runner.assertDone();
    t.is(cp.consistency, 'crash');
    t.regex(cp.consistencyReason ?? '', /could not create an application-consistent checkpoint.*0x800423F4.*crash-consistent checkpoint was taken instead/s);
  });

  test(`${ps}: policy require fails rather than fall back`, async (t) => {
    const { driver, runner } = replayDriver('checkpoint-recovery-require-fails', edition);
    const err = await t.throwsAsync(driver.createCheckpoint(sql01, request('require')), { instanceOf: StillpointError });
    runner.assertDone();
    t.regex(err.message, /VM sql01/);
    t.regex(err.message, /0x800423F4/);
    t.regex(err.message, /policy is "require"/);
  });

  test(`${ps}: access denied (32769) says which group the account needs`, async (t) => {
    const { driver, runner } = replayDriver('checkpoint-access-denied', edition);
    const err = await t.throwsAsync(driver.createCheckpoint(sql01, request('prefer')));
    runner.assertDone();
    t.regex(err.message, /Access Denied \(32769\)/);
    t.regex(err.message, /Hyper-V Administrators/);
  });

  test(`${ps}: Checkpoint-VM with CheckpointType Production: a saved-state snapshot means Hyper-V fell back to standard`, async (t) => {
    const { driver, runner } = replayDriver('checkpoint-vm-production-fallback', edition, { checkpointMethod: 'checkpoint-vm' });
    const cp = await driver.createCheckpoint(sql01, request('prefer'));
    runner.assertDone();
    t.is(cp.consistency, 'crash');
    t.regex(cp.consistencyReason ?? '', /fell back to a standard checkpoint/);
    t.is(cp.disks.length, 2);
  });

  test(`${ps}: Checkpoint-VM with CheckpointType ProductionOnly: the failure is reported with the policy`, async (t) => {
    const { driver, runner } = replayDriver('checkpoint-vm-production-only-fails', edition, { checkpointMethod: 'checkpoint-vm' });
    const err = await t.throwsAsync(driver.createCheckpoint(sql01, request('require')));
    runner.assertDone();
    t.regex(err.message, /Production checkpoints cannot be created for 'sql01'/);
    t.regex(err.message, /ProductionOnly/);
  });

  test(`${ps}: merge: re-enables disk merging and waits until the AVHDX files are merged`, async (t) => {
    const { driver, runner } = replayDriver('merge', edition);
    await driver.mergeCheckpoint(sql01, { id: CP_ID, name: 'stillpoint-job-20240305-0915-sql01', vmId: SQL_ID, vmName: 'sql01', driver: 'hv', createdAt: '' });
    runner.assertDone();
    t.pass();
  });

  test(`${ps}: merge is idempotent when the checkpoint is already gone`, async (t) => {
    const { driver, runner } = replayDriver('merge-already-removed', edition);
    await driver.mergeCheckpoint(sql01, { id: CP_ID, name: 'stillpoint-x', vmId: SQL_ID, vmName: 'sql01', driver: 'hv', createdAt: '' });
    runner.assertDone();
    t.pass();
  });

  test(`${ps}: merge of a VM that no longer exists is a NotFoundError`, async (t) => {
    const { driver } = replayDriver('merge-vm-gone', edition);
    const err = await t.throwsAsync(driver.mergeCheckpoint(sql01, { id: CP_ID, name: 'stillpoint-x', vmId: SQL_ID, vmName: 'sql01', driver: 'hv', createdAt: '' }), { instanceOf: NotFoundError });
    t.regex(err.message, /unable to find a virtual machine/);
  });

  test(`${ps}: listCheckpoints: Stillpoint's checkpoints and AVHDX whose checkpoint is gone`, async (t) => {
    const { driver, runner } = replayDriver('list-checkpoints', edition);
    const refs = await driver.listCheckpoints();
    runner.assertDone();
    t.deepEqual(refs, [
      { id: CP_ID, name: 'stillpoint-job-20240305-0915-sql01', vmId: SQL_ID, vmName: 'sql01', driver: 'hv', createdAt: '2024-03-05T09:15:42.318Z' },
      { id: '44c6e8a0-b2d4-4f68-8a0c-e2f4a6c8e0b2', name: 'stillpoint-orphan-avhdx:E:\\VMs\\web01\\web01_44C6E8A0-B2D4-4F68-8A0C-E2F4A6C8E0B2.avhdx', vmId: '2b6d9e14-7a3c-4f58-b1e2-9c0d8e7f6a51', vmName: 'web01', driver: 'hv', createdAt: '' },
    ]);
  });

  test(`${ps}: RCT: reference point per disk, changed ranges over partial calls, destroy`, async (t) => {
    const { driver, runner } = replayDriver('rct', edition);
    const cp = { id: CP_ID, name: 'stillpoint-job-20240305-0915-sql01', vmId: SQL_ID, vmName: 'sql01', driver: 'hv', createdAt: '', consistency: 'application' as const, disks: [] };
    const point = await driver.createReferencePoint(sql01, cp);
    t.deepEqual(point, {
      id: 'Microsoft:8F3C2A1E-5B7D-4C9A-9E21-3D4F6A7B8C90\\RP-8D2F4B6E-0A1C-4E3F-9B5D-7F1A3C5E7B9D',
      vmId: SQL_ID,
      disks: {
        'SCSI 0:0': 'rctX:c2eb01d9:ccb1:405d:acb6:f0e76d055906:00000001',
        'SCSI 0:1': 'rctX:5a0f3b1e:77d2:4c51:9e0a:3b8f1d6c2e47:00000001',
      },
    });
    const since = { id: 'earlier', vmId: SQL_ID, disks: { 'SCSI 0:0': 'rctX:c2eb01d9:ccb1:405d:acb6:f0e76d055906:00000000' } };
    const ranges = await driver.changedRanges(sql01, 'SCSI 0:0', since);
    t.deepEqual(ranges, [
      { offset: 1048576, length: 2097152 },
      { offset: 2147483648, length: 67108864 },
      { offset: 107374182400, length: 4194304 },
    ]);
    t.is(await driver.changedRanges(sql01, 'SCSI 0:1', since), null, 'no token for that disk: unknown');
    await driver.removeReferencePoint(sql01, { id: 'Microsoft:8F3C2A1E-5B7D-4C9A-9E21-3D4F6A7B8C90\\RP-11111111-2222-4333-8444-555555555555', vmId: SQL_ID, disks: {} });
    runner.assertDone();
  });

  test(`${ps}: RCT: a reset change tracking gives null`, async (t) => {
    const { driver, runner } = replayDriver('rct-reset', edition);
    const since = { id: 'earlier', vmId: SQL_ID, disks: { 'SCSI 0:0': 'rctX:c2eb01d9:ccb1:405d:acb6:f0e76d055906:00000000' } };
    t.is(await driver.changedRanges(sql01, 'SCSI 0:0', since), null);
    runner.assertDone();
  });
}

test('a script that differs from the recording fails and names the line', async (t) => {
  const { driver } = replayDriver('checkpoint-recovery-application', '5.1');
  const renamed = { ...sql01, host: 'HV02' };
  const err = await t.throwsAsync(driver.createCheckpoint(renamed, request('prefer')));
  t.regex(err.message, /script #1 \(CreateSnapshot\) differs from the recording at line 1/);
  t.regex(err.message, /HV02/);
});

test('a checkpoint name without the stillpoint- prefix is refused', async (t) => {
  const { driver } = replayDriver('checkpoint-recovery-application', '7');
  await t.throwsAsync(driver.createCheckpoint(sql01, { ...request('prefer'), name: 'nightly' }), { message: /does not start with "stillpoint-"/ });
});
