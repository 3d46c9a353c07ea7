import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { assertClean, setup } from './helpers.ts';

const diskOf = (dir: string, vm: string) => readFileSync(join(dir, 'host', 'disks', `${vm}.raw`));

test('pipeline runs the steps in DESIGN order (driver quiesces: production checkpoint)', async (t) => {
  const s = await setup(t, [{ name: 'web01' }]);
  const r = await s.run();
  t.is(r.status, 'success', r.error);
  t.deepEqual(s.hooks, [
    'jobStart', 'vmsSelected', 'prerequisites web01', 'decision web01',
    'beforeQuiesce web01', 'checkpointCreated web01', 'afterThaw web01',
    'disksPresented web01', 'diskRead web01', 'diskStored web01', 'restorePointCommitted web01',
    'beforeMerge web01', 'afterMerge web01', 'vmDone web01', 'jobDone',
  ]);
  t.deepEqual(s.events(), ['checkpoint-production web01', 'merge web01']);
  const [vm] = r.vms;
  t.is(vm.method, 'online');
  t.is(vm.level, 'application');
  t.regex(vm.reason, /production checkpoint/);
  const [point] = s.repo.points();
  t.is(point.consistency.method, 'online');
  t.is(point.consistency.reason, vm.reason, 'the reason is kept with the restore point');
  t.true(s.repo.disk(point.id, 'scsi0').equals(diskOf(s.dir, 'web01')), 'stored bytes equal the base disk');
  t.is(vm.bytesRead, 128 * 1024, 'only allocated blocks are read');
  await assertClean(t, s);
});

test('engine quiescing: freeze -> standard checkpoint -> thaw, then read, store, merge', async (t) => {
  const s = await setup(t, [{ name: 'db01' }], { quiesces: false });
  const r = await s.run();
  t.is(r.status, 'success', r.error);
  t.deepEqual(s.events(), ['freeze db01', 'checkpoint-standard db01', 'thaw db01', 'merge db01']);
  t.is(r.vms[0].method, 'online');
  t.regex(r.vms[0].reason, /frozen by quiescer filefreeze/);
  await assertClean(t, s);
});

test('guarantee: thaw runs when the checkpoint fails after the freeze', async (t) => {
  const s = await setup(t, [{ name: 'db01' }], { quiesces: false, fail: { checkpoint: 'db01' } });
  const r = await s.run();
  t.is(r.status, 'failed');
  t.deepEqual(s.events(), ['freeze db01', 'checkpoint-failed db01', 'thaw db01']);
  t.regex(r.vms[0].error ?? '', /VM db01: checkpoint failed: db01: injected checkpoint failure/);
  await assertClean(t, s);
});

test('guarantee: thaw runs when a checkpointCreated tap throws while the guest is frozen; merge too', async (t) => {
  const s = await setup(t, [{ name: 'db01' }], { quiesces: false });
  s.engine.hooks.checkpointCreated.tapPromise('bad', async () => { throw new Error('plugin exploded'); });
  const r = await s.run();
  t.is(r.status, 'failed');
  t.deepEqual(s.events(), ['freeze db01', 'checkpoint-standard db01', 'thaw db01', 'merge db01']);
  t.is(r.vms[0].error, 'plugin exploded');
  await assertClean(t, s);
});

test('guarantee: merge runs when reading fails; the restore point is not left half-written', async (t) => {
  const s = await setup(t, [{ name: 'web01' }], { fail: { read: 'web01' } });
  const r = await s.run();
  t.is(r.status, 'failed');
  t.deepEqual(s.events(), ['checkpoint-production web01', 'read-failed web01', 'merge web01']);
  t.regex(r.vms[0].error ?? '', /injected read failure/);
  t.is(s.repo.aborted, 1);
  t.deepEqual(s.repo.points(), []);
  await assertClean(t, s);
});

test('guarantee: merge runs when storing fails', async (t) => {
  const s = await setup(t, [{ name: 'web01' }], {}, { failStoreOf: 'web01' });
  const r = await s.run();
  t.is(r.status, 'failed');
  t.is(r.vms[0].error, 'storage target refused the write of disk scsi0');
  t.deepEqual(s.events(), ['checkpoint-production web01', 'merge web01']);
  await assertClean(t, s);
});

test('guarantee: a failed merge fails the VM and stays in the journal for cleanup', async (t) => {
  const s = await setup(t, [{ name: 'web01' }], { fail: { merge: 'web01' } });
  const r = await s.run();
  t.is(r.status, 'failed');
  t.regex(r.vms[0].error ?? '', /merging checkpoint stillpoint-\S+ back failed: .*run "stillpoint cleanup"/);
  t.is(s.host.checkpoints().length, 1);
  t.deepEqual((await s.journal.entries()).map((e) => e.intent.kind), ['checkpoint']);
});

test('guarantee: one VM failing does not stop the others; partial success', async (t) => {
  const s = await setup(t, [{ name: 'a' }, { name: 'b' }, { name: 'c' }], { fail: { read: 'b' } });
  const r = await s.run();
  t.is(r.status, 'partial');
  t.deepEqual(r.vms.map((v) => `${v.vm.name}:${v.outcome}`), ['a:success', 'b:failed', 'c:success']);
  t.deepEqual(s.repo.points().map((p) => p.vm.name).sort(), ['a', 'c']);
  t.is(s.events().filter((e) => e.startsWith('merge')).length, 3);
  await assertClean(t, s);
});

test('off-host: one volume snapshot per group, after every checkpoint of the group, deleted after its last VM', async (t) => {
  const s = await setup(t, [
    { name: 'a' }, { name: 'b' },
    { name: 'c', disks: [{ id: 'scsi0', path: 'disks/c.raw', volume: 'vol2', virtualSize: 262144, format: 'vhdx' }] },
  ]);
  const r = await s.run({ mode: 'offHost', proxy: 'proxy1' });
  t.is(r.status, 'success', r.error ?? JSON.stringify(r.vms.map((v) => v.error)));
  const ev = s.events();
  const idx = (e: string) => ev.indexOf(e);
  t.deepEqual(ev.filter((e) => e.startsWith('snapshot ')).sort(), ['snapshot vol1', 'snapshot vol2']);
  t.true(idx('checkpoint-production a') < idx('snapshot vol1'));
  t.true(idx('checkpoint-production b') < idx('snapshot vol1'));
  t.true(idx('merge a') < idx('snapshot-deleted vol1'));
  t.true(idx('merge b') < idx('snapshot-deleted vol1'));
  t.true(idx('present vol1 proxy1') < idx('unpresent vol1'));
  t.true(idx('unpresent vol1') < idx('snapshot-deleted vol1'));
  t.true(idx('merge c') < idx('snapshot-deleted vol2'));
  await assertClean(t, s);
});

test('guarantee: the volume snapshot is deleted when a VM of its group fails', async (t) => {
  const s = await setup(t, [{ name: 'a' }, { name: 'b' }], { fail: { read: 'a' } });
  const r = await s.run({ mode: 'offHost' });
  t.is(r.status, 'partial');
  const ev = s.events();
  t.true(ev.indexOf('snapshot-deleted vol1') > ev.indexOf('merge b'));
  t.true(ev.indexOf('snapshot-deleted vol1') > ev.indexOf('merge a'));
  t.true(s.hooks.includes('volumeSnapshotDeleted vol1'));
  await assertClean(t, s);
});

test('guarantee: checkpoints are merged when the group snapshot fails', async (t) => {
  const s = await setup(t, [{ name: 'a' }, { name: 'b' }], { fail: { snapshot: 'vol1' } });
  const r = await s.run({ mode: 'offHost' });
  t.is(r.status, 'failed');
  t.regex(r.vms[0].error ?? '', /volume snapshot of vol1 failed/);
  t.deepEqual(s.events().filter((e) => e.startsWith('merge')).sort(), ['merge a', 'merge b']);
  await assertClean(t, s);
});

test('a snapshot that cannot be deleted is reported and kept in the journal', async (t) => {
  const s = await setup(t, [{ name: 'a' }], { fail: { snapshotDelete: 'vol1' } });
  const r = await s.run({ mode: 'offHost' });
  t.is(r.vms[0].outcome, 'success');
  t.regex(r.vms[0].warnings.join('\n'), /could not be deleted: .*"stillpoint cleanup" retries/);
  t.deepEqual((await s.journal.entries()).map((e) => e.intent.kind), ['volumeSnapshot']);
});

test('mode auto falls back to on-host for a volume no snapshot provider serves', async (t) => {
  const s = await setup(t, [{ name: 'a', disks: [{ id: 'scsi0', path: 'disks/a.raw', volume: 'D:', virtualSize: 262144, format: 'vhdx' }] }]);
  const r = await s.run({ mode: 'auto' });
  t.is(r.status, 'success');
  t.false(s.events().some((e) => e.startsWith('snapshot')));
});

test('a VM that is off is backed up from its current chain without checkpoint or quiescing', async (t) => {
  const s = await setup(t, [{ name: 'cold', state: 'off' }]);
  const r = await s.run();
  t.is(r.status, 'success');
  t.deepEqual(s.events(), []);
  t.is(r.vms[0].method, 'offline');
  t.regex(s.repo.points()[0].consistency.reason, /the VM is off/);
  t.false(s.hooks.includes('beforeQuiesce cold'));
});

test('a saved or paused VM is reported and skipped, not forced; exit says partial', async (t) => {
  const s = await setup(t, [{ name: 'ok' }, { name: 'sv', state: 'saved' }, { name: 'pz', state: 'paused' }]);
  const r = await s.run();
  t.is(r.status, 'partial');
  t.deepEqual(r.vms.map((v) => v.outcome), ['success', 'skipped', 'skipped']);
  t.regex(r.vms[1].reason, /the VM is saved: no checkpoint can be taken/);
  t.false(s.events().some((e) => e.includes('sv') || e.includes('pz')));
});

test('policy require: a checkpoint that came back crash-consistent fails the VM, and is merged', async (t) => {
  const s = await setup(t, [{ name: 'a' }], { productionFallsBack: true });
  const r = await s.run({ consistency: 'require' });
  t.is(r.status, 'failed');
  t.regex(r.vms[0].error ?? '', /productionOnly/);
  await assertClean(t, s);
});

test('policy prefer: a checkpoint that came back crash-consistent is kept and the reason says why', async (t) => {
  const s = await setup(t, [{ name: 'a' }], { productionFallsBack: true });
  const r = await s.run({ consistency: 'prefer' });
  t.is(r.status, 'success');
  t.is(r.vms[0].method, 'crash-consistent');
  t.regex(r.vms[0].reason, /fell back to crash-consistent \(policy "prefer"\): the guest did not answer the VSS request/);
  t.is(s.repo.points()[0].consistency.level, 'crash');
  await assertClean(t, s);
});

test('freeze failure: prefer falls back to a standard checkpoint, require fails without a checkpoint', async (t) => {
  const p = await setup(t, [{ name: 'a' }], { quiesces: false, fail: { freeze: 'a' } });
  const rp = await p.run({ consistency: 'prefer' });
  t.is(rp.vms[0].method, 'crash-consistent');
  t.regex(rp.vms[0].reason, /could not freeze the guest/);
  await assertClean(t, p);
  const q = await setup(t, [{ name: 'a' }], { quiesces: false, fail: { freeze: 'a' } });
  const rq = await q.run({ consistency: 'require' });
  t.is(rq.status, 'failed');
  t.false(q.events().some((e) => e.startsWith('checkpoint')));
  await assertClean(t, q);
});

test('policy crash: no quiescing, standard checkpoint', async (t) => {
  const s = await setup(t, [{ name: 'a' }], { quiesces: false });
  const r = await s.run({ consistency: 'crash' });
  t.deepEqual(s.events(), ['checkpoint-standard a', 'merge a']);
  t.is(r.vms[0].method, 'crash-consistent');
});

test('a thaw that fails is kept in the journal and the next reconcile thaws the guest', async (t) => {
  const s = await setup(t, [{ name: 'a' }], { quiesces: false, fail: { thaw: 'a' } });
  const r = await s.run();
  t.regex(r.vms[0].warnings.join('\n'), /injected thaw failure; the journal keeps the freeze/);
  t.is(s.host.frozen().length, 1);
  const s2run = await s.run({ vms: { include: ['nothing'], exclude: [] } });
  t.regex(s2run.reconciled.join('\n'), /thawed VM a \(vm-1\), left frozen by run/);
  t.is(s.host.frozen().length, 0);
});

test('limits: at most perHost VMs are checkpointed at once on a host', async (t) => {
  const s = await setup(t, [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }]);
  let active = 0;
  let max = 0;
  s.engine.hooks.beforeQuiesce.tapPromise('count', async () => { active++; max = Math.max(max, active); await new Promise((r) => setTimeout(r, 5)); });
  s.engine.hooks.afterThaw.tapPromise('count', async () => { active--; });
  const r = await s.run({}, { limits: { perHost: 1, perVolume: 1, perProxy: 1, perRepository: 1 } });
  t.is(r.status, 'success');
  t.is(max, 1);
});

test('a job that selects no VM fails and says what the inventory has', async (t) => {
  const s = await setup(t, [{ name: 'a' }]);
  const r = await s.run({ vms: { include: ['zzz*'], exclude: [] } });
  t.is(r.status, 'failed');
  t.is(r.error, 'job "nightly" selects no VM. the inventory has 1 VM(s): a; check the job\'s "vms"');
});
