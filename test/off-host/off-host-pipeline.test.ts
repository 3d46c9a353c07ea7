import test from 'ava';
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { makeLoopBtrfs, skipBtrfs, type LoopBtrfs } from './helpers/btrfs-volume.ts';
import { at, offHostSetup, proxySpec } from './helpers/pipeline.ts';

const skip = skipBtrfs();
const btrfsTest = skip ? test.skip : test.serial;
if (skip) test('off-host pipeline tests (skipped)', (t) => { t.log(`skipped: ${skip}; they run under CI=true`); t.pass(); });

let fs: LoopBtrfs;
test.before(() => { if (!skip) fs = makeLoopBtrfs(768); });
test.after.always(() => { fs?.cleanup(); });

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

btrfsTest('3 VMs on one volume and 2 on another: one snapshot per group, read on the proxy, deleted once after the group\'s last VM', async (t) => {
  const vms = [
    { name: 'a1', volume: 0 }, { name: 'a2', volume: 0 }, { name: 'a3', volume: 0 },
    { name: 'b1', volume: 1 }, { name: 'b2', volume: 1 },
  ];
  const s = await offHostSetup(t, fs, vms, { proxies: [proxySpec('p1')], volumes: 2 });
  const [volA, volB] = s.volumes;
  const snapshotPaths = new Map<string, string>();
  // Once the snapshot exists the live disks move on: the backup must hold them as they were.
  s.engine.hooks.volumeSnapshotCreated.tapPromise('test', async (snapshot, group) => {
    snapshotPaths.set(snapshot.volume.name, snapshot.path!);
    for (const run of group.vms) writeFileSync(s.disks.get(run.vm.name)!.path, randomBytes(4096));
  });
  const presented = new Map<string, string>();
  s.engine.hooks.disksPresented.tapPromise('test', async (run, disks) => { presented.set(run.vm.name, disks[0].path); });

  const result = await s.run();
  t.is(result.status, 'success', JSON.stringify(result.vms.map((v) => [v.vm.name, v.error])));
  const log = s.hooks;

  for (const [volume, names] of [[volA, ['a1', 'a2', 'a3']], [volB, ['b1', 'b2']]] as const) {
    const created = at(t, log, `volumeSnapshotCreated ${volume}`);
    const deleted = at(t, log, `volumeSnapshotDeleted ${volume}`);
    t.is(log.filter((l) => l === `volumeSnapshotCreated ${volume}`).length, 1, 'one snapshot per group');
    t.is(log.filter((l) => l === `volumeSnapshotDeleted ${volume}`).length, 1, 'deleted exactly once');
    for (const vm of names) {
      // every VM of the group: checkpoint (quiesced and thawed) before the one volume snapshot ...
      t.true(at(t, log, `beforeQuiesce ${vm}`) < at(t, log, `checkpointCreated ${vm}`));
      t.true(at(t, log, `afterThaw ${vm}`) < created, `${vm} thawed before the snapshot`);
      // ... then presented on the proxy, read, stored, committed, merged, all before the deletion
      const order = ['disksPresented', 'diskRead', 'diskStored', 'restorePointCommitted', 'afterMerge'].map((h) => at(t, log, `${h} ${vm}`));
      t.true(created < order[0]);
      t.deepEqual([...order].sort((x, y) => x - y), order, `${vm}: present -> read -> store -> commit -> merge`);
      t.true(order[4] < deleted, `${vm} merged before its group's snapshot is deleted`);
      // the proxy read the disk inside the snapshot, not the live volume
      t.true(presented.get(vm)!.startsWith(snapshotPaths.get(volume)! + '/'), presented.get(vm));
      // and the restored disk equals the base disk as it was at checkpoint time
      t.true((await s.restored(vm)).equals(s.disks.get(vm)!.data), `${vm} restored equals its base disk at checkpoint time`);
    }
  }
  const vmA = result.vms.find((v) => v.vm.name === 'a1')!;
  t.is(vmA.disks[0].bytesRead, 512 * 1024, 'only the allocated half was read');
  t.deepEqual(await s.btrfsSnapshots(), []);
  t.deepEqual(s.host.checkpoints(), []);
  t.deepEqual((await s.journal.entries()).map((e) => e.intent.kind), []);
});

btrfsTest('a volume with more VMs than a snapshot may hold is split into groups; snapshots per volume stay within the limit', async (t) => {
  const s = await offHostSetup(t, fs, [1, 2, 3, 4, 5].map((i) => ({ name: `v${i}`, volume: 0 })), { proxies: [proxySpec('p1', { concurrency: 3 })], volumes: 1 });
  let live = 0;
  let most = 0;
  s.engine.hooks.volumeSnapshotCreated.tapPromise('test', async () => { most = Math.max(most, ++live); });
  s.engine.hooks.volumeSnapshotDeleted.tapPromise('test', async () => { live--; });
  const groups = new Map<string, string[]>();
  s.engine.hooks.volumeSnapshotCreated.tapPromise('test-groups', async (snap, group) => { groups.set(snap.id, group.vms.map((v) => v.vm.name)); });
  const result = await s.run({}, { perHost: 4, perVolume: 1, perProxy: 2, perRepository: 4, vmsPerSnapshot: 2 });
  t.is(result.status, 'success', JSON.stringify(result.vms.map((v) => [v.vm.name, v.error])));
  t.deepEqual([...groups.values()].map((g) => g.length).sort(), [1, 2, 2]);
  t.is(most, 1, 'at most one snapshot of the volume at once (perVolume 1)');
  t.is(s.hooks.filter((l) => l.startsWith('volumeSnapshotDeleted')).length, 3);
  for (let i = 1; i <= 5; i++) t.true((await s.restored(`v${i}`)).equals(s.disks.get(`v${i}`)!.data));
  t.deepEqual(await s.btrfsSnapshots(), []);
});

btrfsTest('a proxy killed mid-read: the VM moves to the other proxy, and the snapshot is still deleted', async (t) => {
  const s = await offHostSetup(t, fs, [{ name: 'big', volume: 0, size: 96 * 1024 * 1024 }], {
    proxies: [proxySpec('p1', { concurrency: 1 }), proxySpec('p2', { concurrency: 1 })], volumes: 1,
  });
  const pids: number[] = [];
  let killed: string | undefined;
  s.engine.hooks.diskProgress.tap('test', (run) => {
    if (killed) return;
    const pool = s.pools.get(run.job.runId)!;
    killed = 'pending';
    void pool.connected().then((clients) => {
      for (const c of clients.values()) pids.push(c.pid!);
      const [name, client] = [...clients][0];
      killed = name;
      process.kill(client.pid!, 'SIGKILL');
    });
  });
  const result = await s.run();
  const vm = result.vms[0];
  t.is(vm.outcome, 'success', vm.error);
  t.true(killed === 'p1' || killed === 'p2');
  t.true((await s.restored('big')).equals(s.disks.get('big')!.data), 'the restore point holds the whole disk');
  t.is(s.hooks.filter((l) => l.startsWith('volumeSnapshotDeleted')).length, 1);
  t.deepEqual(await s.btrfsSnapshots(), []);
  t.deepEqual(s.host.checkpoints(), []);
  await new Promise((r) => setTimeout(r, 200));
  for (const pid of pids) t.false(alive(pid), `proxy process ${pid} is gone`);
});

btrfsTest('a proxy killed mid-read with no other proxy: the VM fails cleanly, the others go on, and nothing is left after cleanup', async (t) => {
  const s = await offHostSetup(t, fs, [{ name: 'big', volume: 0, size: 96 * 1024 * 1024 }, { name: 'small', volume: 0 }], {
    proxies: [proxySpec('only', { concurrency: 1 })], volumes: 1,
  });
  let victim: number | undefined;
  s.engine.hooks.diskProgress.tap('test', (run) => {
    if (victim !== undefined || run.vm.name !== 'big') return;
    victim = 0;
    void s.pools.get(run.job.runId)!.connected().then((clients) => {
      victim = clients.get('only')!.pid!;
      process.kill(victim, 'SIGKILL');
    });
  });
  const result = await s.run({}, { perHost: 2, perVolume: 1, perProxy: 2, perRepository: 4, vmsPerSnapshot: 4 });
  t.is(result.status, 'partial');
  const big = result.vms.find((v) => v.vm.name === 'big')!;
  const small = result.vms.find((v) => v.vm.name === 'small')!;
  t.is(big.outcome, 'failed');
  t.regex(big.error!, /lost the proxy: the proxy process was killed by SIGKILL/);
  t.regex(big.error!, /no proxy left to read volume/);
  t.is(small.outcome, 'success', small.error);
  t.true((await s.restored('small')).equals(s.disks.get('small')!.data));
  t.is(await s.repo.latest('big'), null, 'no restore point for the failed VM');
  t.deepEqual(await s.btrfsSnapshots(), [], 'the snapshot was deleted');
  t.deepEqual(s.host.checkpoints(), [], 'both checkpoints were merged');
  t.deepEqual((await s.journal.entries()).map((e) => e.intent.kind), []);
  t.false(alive(victim!));
  // what the dead proxy stored (whole packs with their index, or a pack without one) belongs to no
  // restore point: garbage collection removes it (packs are 16 MiB: it may also have stored none)
  const gc = await s.repo.gc();
  t.false(gc.deferred, gc.reason);
  t.log(`gc removed ${gc.deletedChunks} chunk(s) in ${gc.deletedPacks} pack(s) the dead proxy had stored`);
  const again = await s.repo.gc();
  t.is(again.candidates, 0, 'nothing unreferenced is left');
  t.true((await s.restored('small')).equals(s.disks.get('small')!.data), 'gc kept what the restore point needs');
});
