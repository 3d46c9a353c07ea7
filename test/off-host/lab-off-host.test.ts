/**
 * Off-host backup on the lab: the engine's pipeline with the lab driver (running guests writing to
 * real VHDX chains), the off-host transport with a real `stillpoint proxy` process reading the base
 * disks from the volume snapshot with the native VHDX library, and the real repository. The lab's
 * event trace shows the order of DESIGN.md step 5.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runJob, type JobSpec } from '../../core/engine/pipeline.ts';
import { reconcile } from '../../core/journal/reconcile.ts';
import type { LabFileInput } from '../../plugins/lab/model.ts';
import { readEvents, type LabEvent } from '../../plugins/lab/trace.ts';
import { verifyRawImage } from '../../plugins/lab/verifier.ts';
import type { ProxyPool } from '../../plugins/off-host/pool.ts';
import { hashFrozenChain, offHostLabRig } from './helpers/lab-rig.ts';
import { makeLoopBtrfs, skipBtrfs, type LoopBtrfs } from './helpers/btrfs-volume.ts';

const MiB = 1024 * 1024;

function labWith(vms: Array<{ name: string; volume: string }>, volumes: Array<{ name: string; path?: string }>): LabFileInput {
  return {
    hosts: [{ name: 'hv01', osBuild: 17763 }],
    volumes,
    vms: vms.map((v, i) => ({
      id: `vm-${i + 1}`, name: v.name, host: 'hv01', configurationVersion: '9.0', guestOs: 'linux', state: 'running',
      integration: { vssDaemon: true },
      disks: [{ id: 'SCSI 0:0', volume: v.volume, file: `${v.name}/${v.name}.vhdx`, virtualSize: 16 * MiB }],
    })),
    workload: { dataPages: 512, pageDelayMs: 1, txGapMs: 2 },
  };
}

async function labSetup(t: ExecutionContext, lab: LabFileInput, options: { chunkSize?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-lab-offhost-'));
  await writeFile(join(dir, 'lab.json'), JSON.stringify(lab, null, 2));
  const { engine, offHost, driver, repo, repoConfig, journal, provider } = await offHostLabRig(t, dir, { proxyConcurrency: 2, chunkSize: options.chunkSize ?? 1024 * 1024 });

  // The frozen chain of every disk as it is when its checkpoint exists: what the backup must hold.
  const atCheckpoint = new Map<string, string>();
  engine.hooks.checkpointCreated.tapPromise('test', async (run, cp) => {
    for (const d of cp.disks) atCheckpoint.set(`${run.vm.name}/${d.diskId}`, await hashFrozenChain(engine, d));
  });

  return {
    dir, engine, driver, repo, journal, provider, atCheckpoint,
    pools: (offHost as unknown as { pools: ReadonlyMap<string, ProxyPool> }).pools,
    events: (): LabEvent[] => readEvents(join(dir, 'events.jsonl')),
    run: (job: Partial<JobSpec> = {}, extra: { restorePointWriters?: number } = {}) => runJob({
      engine, drivers: [driver], repository: repo, journal, ...extra,
      repositoryAccess: { config: repoConfig as unknown as Record<string, unknown> },
      job: { name: 'nightly', vms: { include: ['*'], exclude: [] }, mode: 'offHost', consistency: 'require', ...job },
    }),
    /** Restore the VM's latest restore point; the disk's sha256 and the verifier's verdict. */
    async restored(vm: string) {
      const manifest = await repo.latest(vm);
      if (!manifest) return undefined;
      const folder = join(dir, 'restored', vm);
      const [disk] = await repo.restoreVm(manifest.id, folder, { format: 'raw', overwrite: true });
      return { sha256: createHash('sha256').update(readFileSync(disk.path)).digest('hex'), verdict: await verifyRawImage(disk.path) };
    },
    avhdx(): string[] {
      const out: string[] = [];
      const walk = (d: string) => {
        if (!existsSync(d)) return;
        for (const e of readdirSync(d, { withFileTypes: true })) {
          if (e.isDirectory()) walk(join(d, e.name));
          else if (/\.avhdx$/i.test(e.name)) out.push(join(d, e.name));
        }
      };
      for (const v of lab.volumes) walk(v.path ?? join(dir, 'volumes', v.name));
      return out;
    },
  };
}

function index(t: ExecutionContext, events: LabEvent[], type: string, match: Partial<LabEvent>): number {
  const i = events.findIndex((e) => e.type === type && Object.entries(match).every(([k, v]) => e[k] === v));
  t.not(i, -1, `${type} ${JSON.stringify(match)} is in the trace`);
  return i;
}

test.serial('the lab trace shows DESIGN step 5 for 3 VMs on one volume and 2 on another; restores equal the base disks at checkpoint time', async (t) => {
  const groups = { 'vol-a': ['a1', 'a2', 'a3'], 'vol-b': ['b1', 'b2'] };
  const s = await labSetup(t, labWith(Object.entries(groups).flatMap(([volume, names]) => names.map((name) => ({ name, volume }))), [{ name: 'vol-a' }, { name: 'vol-b' }]));
  const result = await s.run();
  t.is(result.status, 'success', JSON.stringify(result.vms.map((v) => [v.vm.name, v.error])));
  const events = s.events();

  for (const [volume, names] of Object.entries(groups)) {
    const created = events.filter((e) => e.type === 'volume-snapshot-created' && e.volume === volume);
    const deleted = events.filter((e) => e.type === 'volume-snapshot-deleted' && e.volume === volume);
    t.is(created.length, 1, `one snapshot of ${volume}`);
    t.is(deleted.length, 1, `the snapshot of ${volume} is deleted exactly once`);
    const snapshot = created[0].snapshot as string;
    t.is(deleted[0].snapshot, snapshot);
    const iCreated = index(t, events, 'volume-snapshot-created', { volume });
    const iPresented = index(t, events, 'volume-snapshot-presented', { volume });
    const iUnpresented = index(t, events, 'volume-snapshot-unpresented', { volume });
    const iDeleted = index(t, events, 'volume-snapshot-deleted', { volume });
    t.true(iCreated < iPresented && iUnpresented < iDeleted);
    for (const vm of names) {
      const steps = [
        index(t, events, 'checkpoint-requested', { vm }),
        index(t, events, 'guest-quiesced', { vm }),
        index(t, events, 'avhdx-created', { vm }),
        index(t, events, 'guest-thawed', { vm }),
        index(t, events, 'checkpoint-created', { vm }),
      ];
      t.deepEqual([...steps].sort((a, b) => a - b), steps, `${vm}: quiesce -> AVHDX -> thaw -> checkpoint`);
      t.true(steps[4] < iCreated, `${vm}: checkpoint before the group's one volume snapshot`);
      const read = index(t, events, 'base-disk-read', { vm });
      const merged = index(t, events, 'merged', { vm });
      t.true(iPresented < read && read < merged && merged < iDeleted, `${vm}: presented -> read -> merged -> snapshot deleted`);
      t.true((events[read].path as string).startsWith(snapshot + '/'), `${vm} was read from the snapshot: ${events[read].path}`);
      const restored = await s.restored(vm);
      t.is(restored?.sha256, s.atCheckpoint.get(`${vm}/SCSI 0:0`), `${vm}: restored disk equals the base disk at checkpoint time`);
      t.true(restored!.verdict.consistent, `${vm}: ${JSON.stringify(restored!.verdict)}`);
    }
    // the snapshot is deleted after the group's last VM
    const lastMerged = Math.max(...names.map((vm) => index(t, events, 'merged', { vm })));
    t.true(lastMerged < iDeleted);
  }
  t.deepEqual(s.avhdx(), [], 'no AVHDX left');
  t.deepEqual(await s.provider.list(), [], 'no volume snapshot left');
  t.deepEqual((await s.driver.listCheckpoints()).map((c) => c.name), []);
  t.deepEqual((await s.journal.entries()).map((e) => e.intent.kind), []);
});

const skip = skipBtrfs();
let fs: LoopBtrfs | undefined;
test.after.always(() => { fs?.cleanup(); });

(skip ? test.skip : test.serial)('btrfs lab volumes: the proxy killed mid-read fails that VM cleanly; nothing is left after cleanup', async (t) => {
  fs = makeLoopBtrfs(512);
  const volA = fs.subvolume('lab-vol-a');
  const s = await labSetup(t, labWith([{ name: 'victim', volume: 'vol-a' }, { name: 'other', volume: 'vol-a' }], [{ name: 'vol-a', path: volA }]), { chunkSize: 65536 });
  let pid: number | undefined;
  s.engine.hooks.diskProgress.tap('test', (run) => {
    if (pid !== undefined || run.vm.name !== 'victim') return;
    pid = 0;
    void s.pools.get(run.job.runId)!.connected().then((clients) => {
      pid = clients.get('p1')!.pid!;
      process.kill(pid, 'SIGKILL');
    });
  });
  // One restore point at a time, so that `other` is read after the kill (restore points of several
  // VMs are written concurrently by default, and a proxy killed mid-read fails every VM it reads).
  const result = await s.run({}, { restorePointWriters: 1 });
  const victim = result.vms.find((v) => v.vm.name === 'victim')!;
  const other = result.vms.find((v) => v.vm.name === 'other')!;
  t.is(victim.outcome, 'failed');
  t.regex(victim.error!, /lost the proxy: the proxy process was killed by SIGKILL/);
  t.is(other.outcome, 'success', other.error);
  t.is((await s.restored('other'))?.sha256, s.atCheckpoint.get('other/SCSI 0:0'));
  t.is(await s.repo.latest('victim'), null);
  const created = s.events().filter((e) => e.type === 'volume-snapshot-created');
  t.is(created.length, 1);
  t.regex(created[0].detail as string, /btrfs/);
  t.is(s.events().filter((e) => e.type === 'volume-snapshot-deleted').length, 1);

  // cleanup: the journal's reconcile finds nothing to undo; the repository's gc removes the dead proxy's chunks
  const report = await reconcile({
    journal: s.journal, drivers: [s.driver], selfRunId: 'cleanup', inventories: new Map([['lab', await s.driver.inventory()]]),
    resolveQuiescer: (vm) => s.engine.quiescer(vm), resolveSnapshotProvider: (v) => s.engine.snapshotProvider(v),
  });
  t.deepEqual(report.problems, []);
  const gc = await s.repo.gc();
  t.log(`gc removed ${gc.deletedChunks} chunk(s) and ${gc.deletedTables} table(s) no restore point references`);
  t.false(gc.deferred);
  t.is((await s.repo.gc()).candidates, 0, 'nothing unreferenced is left');
  t.is((await s.restored('other'))?.sha256, s.atCheckpoint.get('other/SCSI 0:0'), 'gc kept what the restore point needs');
  t.deepEqual(s.avhdx(), []);
  t.deepEqual(await s.provider.list(), []);
  t.deepEqual(readdirSync(join(volA, '.stillpoint-snapshots')), [], 'no btrfs snapshot left');
  t.deepEqual((await s.driver.listCheckpoints()).map((c) => c.name), []);
  t.deepEqual((await s.journal.entries()).map((e) => e.intent.kind), []);
  t.throws(() => process.kill(pid!, 0), { code: 'ESRCH' }, 'the killed proxy is gone');
});
