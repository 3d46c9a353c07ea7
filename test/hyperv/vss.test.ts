import { join } from 'node:path';
import test from 'ava';
import type { VmFacts } from '../../core/contracts/vm.ts';
import { ReplayRunner } from '../../plugins/hyperv/replay-runner.ts';
import { VssSnapshotProvider } from '../../plugins/vss/provider.ts';
import { outcomeOfCheckpoint, WindowsVssQuiescer } from '../../plugins/vss/quiescer.ts';
import { EDITIONS, FIXTURES } from './helpers.ts';

const SHADOW = '{6a1f3c5e-8b2d-4e7f-9a0c-1d3e5f7a9b2c}';
const volume = { name: 'csv1', path: 'C:\\ClusterStorage\\Volume1' };
const snapshot = { id: SHADOW, provider: 'vss', volume, createdAt: '2024-06-01T00:00:03.000Z', jobId: 'job-20240601-0200' };

function provider(scenario: string, edition: '5.1' | '7' = '5.1') {
  const runner = ReplayRunner.fromFile(join(FIXTURES, `${scenario}.json`), edition);
  const p = new VssSnapshotProvider(runner, { metadataDir: 'C:\\ProgramData\\Stillpoint\\vss', proxies: {}, now: () => new Date('2024-06-01T00:00:03Z') });
  return { p, runner };
}

test('serves Windows volumes only', async (t) => {
  const { p } = provider('vss-list');
  t.true(await p.serves({ name: 'd', path: 'D:\\' }));
  t.true(await p.serves(volume));
  t.false(await p.serves({ name: 'x', path: '/var/lib/vms' }));
});

test('create: transportable hardware shadow copy of a CSV on its owner node, recorded for reconcile', async (t) => {
  const { p, runner } = provider('vss-create-csv');
  const s = await p.create(volume, { jobId: 'job-20240601-0200' });
  runner.assertDone();
  t.deepEqual(s, snapshot);
});

test('create: a CSV owned by another node is refused with what to do', async (t) => {
  const { p, runner } = provider('vss-create-csv-not-owner');
  const err = await t.throwsAsync(p.create(volume, { jobId: 'job-20240601-0200' }));
  runner.assertDone();
  t.regex(err.message, /owned by HVC-N2, not by HVC-N1/);
  t.regex(err.message, /Move-ClusterSharedVolume -Name 'Cluster Disk 2' -Node HVC-N1/);
});

test('create: no hardware provider for the LUN is a clear error', async (t) => {
  const { p, runner } = provider('vss-create-no-hardware-provider');
  const err = await t.throwsAsync(p.create(volume, { jobId: 'job-20240601-0200' }));
  runner.assertDone();
  t.regex(err.message, /VSS_E_VOLUME_NOT_SUPPORTED/);
  t.regex(err.message, /hardware provider/);
});

test('present on a proxy, map paths, unpresent, delete, delete again', async (t) => {
  const { p, runner } = provider('vss-present-delete');
  const presented = await p.present(snapshot, 'PROXY01');
  t.is(presented.proxy, 'PROXY01');
  t.is(presented.mapPath('C:\\ClusterStorage\\Volume1\\app01\\Virtual Hard Disks\\app01.vhdx'),
    'C:\\Stillpoint\\mnt\\6a1f3c5e-8b2d-4e7f-9a0c-1d3e5f7a9b2c\\app01\\Virtual Hard Disks\\app01.vhdx');
  t.throws(() => presented.mapPath('D:\\other\\x.vhdx'), { message: /not on volume C:\\ClusterStorage\\Volume1/ });
  await presented.unpresent();
  await p.delete(snapshot);
  await t.notThrowsAsync(p.delete(snapshot), 'deleting a shadow copy that is gone is not an error');
  runner.assertDone();
});

for (const edition of EDITIONS) {
  test(`PowerShell ${edition}: list the shadow copies Stillpoint made, by volume`, async (t) => {
    const { p } = provider('vss-list', edition);
    const all = await p.list();
    t.deepEqual(all.map((s) => [s.id, s.volume.path, s.createdAt]), [
      [SHADOW, 'C:\\ClusterStorage\\Volume1', '2024-06-01T00:00:03.000Z'],
      ['{7b2e4d6f-9c3a-4f80-8b1d-2e4f6a8c0d3e}', 'D:\\', '2024-06-01T00:00:03.000Z'],
    ]);
    const { p: p2 } = provider('vss-list', edition);
    t.deepEqual((await p2.list({ name: 'd', path: 'd:\\' })).map((s) => s.id), ['{7b2e4d6f-9c3a-4f80-8b1d-2e4f6a8c0d3e}']);
  });
}

const vm = (over: Partial<VmFacts> = {}): VmFacts => ({
  id: 'x', name: 'sql01', host: 'HV01', driver: 'hv', clustered: false, configurationVersion: '9.0', generation: 2, guestOs: 'windows',
  state: 'running', checkpointType: 'production', integration: { vssRequestor: { enabled: true, running: true } }, disks: [], ...over,
});

test('Windows VSS quiescer under Hyper-V: readiness from the integration service, no freeze of its own, outcome from the checkpoint', async (t) => {
  const q = new WindowsVssQuiescer();
  t.true(q.serves(vm()));
  t.false(q.serves(vm({ guestOs: 'linux', integration: { vssDaemon: true } })));
  t.true((await q.readiness(vm())).ready);
  const disabled = await q.readiness(vm({ integration: { vssRequestor: { enabled: false, running: false } } }));
  t.false(disabled.ready);
  t.regex(disabled.reason, /disabled/);
  const silent = await q.readiness(vm({ integration: { vssRequestor: { enabled: true, running: false } } }));
  t.false(silent.ready);
  t.regex(silent.reason, /does not answer/);
  await t.throwsAsync(q.freeze(vm(), { deadlineMs: 1000 }), { message: /quiesced by its hypervisor/ });
  t.deepEqual(outcomeOfCheckpoint(vm(), { consistency: 'crash', consistencyReason: 'fell back' }), {
    consistency: 'crash', details: [{ target: 'sql01 (VSS in the guest, through Hyper-V)', consistency: 'crash', reason: 'fell back' }],
  });
});
