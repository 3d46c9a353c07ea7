/**
 * Incremental forever off-host: the engine asks the lab driver for the changed ranges and hands them to
 * a real `stillpoint proxy` process in its task; the proxy reads only those from the volume snapshot.
 * A reset sends the proxy no ranges and the reason, which the restore point's disk records keep.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runJob } from '../../core/engine/pipeline.ts';
import { LabDriver } from '../../plugins/lab/driver.ts';
import type { LabFileInput } from '../../plugins/lab/model.ts';
import { readEvents } from '../../plugins/lab/trace.ts';
import { verifyRawImage } from '../../plugins/lab/verifier.ts';
import { hashFrozenChain, offHostLabRig } from './helpers/lab-rig.ts';
import { VhdxDisk } from '../../plugins/vhdx/index.ts';

const MiB = 1024 * 1024;
const VM_ID = 'vm-oh-1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const lab: LabFileInput = {
  hosts: [{ name: 'hv01', osBuild: 17763 }],
  volumes: [{ name: 'vol-a' }],
  vms: [{
    id: VM_ID, name: 'app1', host: 'hv01', configurationVersion: '9.0', guestOs: 'linux', state: 'running',
    integration: { vssDaemon: true },
    disks: [{ id: 'SCSI 0:0', volume: 'vol-a', file: 'app1/app1.vhdx', virtualSize: 24 * MiB }],
  }],
  workload: { dataPages: 256, pageDelayMs: 2, txGapMs: 3, minPages: 2, maxPages: 4 },
};

async function setup(t: ExecutionContext) {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-inc-offhost-'));
  await writeFile(join(dir, 'lab.json'), JSON.stringify(lab, null, 2));
  // the base disk, with 12 MiB of data after the workload's pages
  const prep = new LabDriver({ name: 'lab', dir, guests: false });
  const [vm] = (await prep.inventory()).vms;
  const disk = await VhdxDisk.open(vm.disks[0].path, { writable: true });
  try { await disk.write(4 * MiB, randomBytes(12 * MiB)); await disk.flush(); } finally { await disk.close(); }
  await prep.close();

  const { engine, driver, repo, repoConfig, journal } = await offHostLabRig(t, dir, { proxyConcurrency: 1, chunkSize: 65536 });
  const frozen: string[] = [];
  engine.hooks.checkpointCreated.tapPromise('test', async (_run, cp) => {
    frozen.push(await hashFrozenChain(engine, cp.disks[0]));
  });
  return {
    dir, driver, repo, frozen,
    run: () => runJob({
      engine, drivers: [driver], repository: repo, journal,
      repositoryAccess: { config: repoConfig as unknown as Record<string, unknown> },
      job: { name: 'nightly', vms: { include: ['*'], exclude: [] }, mode: 'offHost', consistency: 'require' },
    }),
    async restored(id: string) {
      const [r] = await repo.restoreVm(id, join(dir, 'restored', id), { format: 'raw' });
      return { sha256: createHash('sha256').update(readFileSync(r.path)).digest('hex'), verdict: await verifyRawImage(r.path) };
    },
    async resetTracking() {
      const file = driver.paths.vmStateFile(VM_ID);
      const state = JSON.parse(await readFile(file, 'utf8')) as { disks: Record<string, { trackingId: string }> };
      for (const d of Object.values(state.disks)) d.trackingId = 'reset-by-test';
      await writeFile(file, JSON.stringify(state, null, 2));
    },
  };
}

test.serial('off-host: the proxy reads only the changed ranges the engine sends; a reset sends the reason instead', async (t) => {
  const s = await setup(t);
  await sleep(200);
  const r1 = await s.run();
  t.is(r1.status, 'success', r1.error ?? r1.vms[0]?.error);
  const v1 = r1.vms[0];
  t.regex(v1.readMode!, /^full read: no previous restore point/);
  t.true(v1.bytesRead >= 12 * MiB);

  await sleep(400);
  const r2 = await s.run();
  t.is(r2.status, 'success', r2.error ?? r2.vms[0]?.error);
  const v2 = r2.vms[0];
  t.is(v2.readMode, 'incremental (changed ranges)');
  t.regex(v2.disks[0].reason!, new RegExp(`^incremental: \\d+ changed range\\(s\\).*since restore point ${v1.restorePoint}`));
  t.true(v2.bytesRead > 0 && v2.bytesRead * 5 < v1.bytesRead, `the proxy read ${v2.bytesRead} bytes for the incremental, ${v1.bytesRead} for the full backup`);
  const reads = readEvents(join(s.dir, 'events.jsonl')).filter((e) => e.type === 'base-disk-read');
  t.true((reads.at(-1)!.path as string).includes('snapshot'), `the proxy read from the volume snapshot: ${reads.at(-1)!.path}`);
  const got2 = await s.restored(v2.restorePoint!);
  t.is(got2.sha256, s.frozen[1], 'the incremental restores to the base disk at checkpoint time');
  t.true(got2.verdict.consistent, got2.verdict.problems.join('; '));

  await s.resetTracking();
  const r3 = await s.run();
  t.is(r3.status, 'success', r3.error ?? r3.vms[0]?.error);
  t.regex(r3.vms[0].readMode!, /^full read: change tracking was reset/);
  const m3 = await s.repo.manifest(r3.vms[0].restorePoint!);
  t.regex(m3.disks[0].reason!, /^full read: change tracking was reset: driver "lab" knows no changes since reference point .*; unchanged chunks were skipped by hash$/, 'the proxy recorded the reason it was sent');
  t.is((await s.restored(r3.vms[0].restorePoint!)).sha256, s.frozen[2]);
  t.deepEqual((await s.driver.vmState(VM_ID)).referencePoints.map((p) => p.id), [(m3.referencePoint as { id: string }).id]);
});
