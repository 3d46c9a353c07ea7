/**
 * End to end on the lab: the engine's pipeline (runJob) with the lab driver, the VHDX reader and
 * the real repository, while the guests write. Restored disks are checked by the verifier.
 */
import { readdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { Engine } from '../../core/engine/engine.ts';
import { runJob, type JobSpec } from '../../core/engine/pipeline.ts';
import { Journal } from '../../core/journal/journal.ts';
import { openRepository, repositoryConfigSchema } from '../../core/repository/index.ts';
import labPlugin from '../../plugins/lab/index.ts';
import type { LabDriver } from '../../plugins/lab/driver.ts';
import { readEvents } from '../../plugins/lab/trace.ts';
import { verifyRawImage } from '../../plugins/lab/verifier.ts';
import { LocalStorage } from '../../plugins/local/storage.ts';
import vhdxPlugin from '../../plugins/vhdx/index.ts';
import { makeLab, smallLab } from './helpers.ts';
import type { LabFileInput } from '../../plugins/lab/model.ts';

async function backupSetup(lab: LabFileInput) {
  const base = await makeLab(lab, { guests: false });
  const dir = base.dir;
  const engine = new Engine();
  const context = { configDir: dir, stateDir: join(dir, '.stillpoint-state') };
  await engine.use(labPlugin(labPlugin.optionsSchema.parse({}), context), 'lab');
  await engine.use(vhdxPlugin(vhdxPlugin.optionsSchema.parse({}), context), 'vhdx');
  await engine.start();
  const driver = engine.driver({ name: 'lab', type: 'lab', options: { dir } }) as LabDriver;
  const storage = new LocalStorage(join(dir, 'repository'));
  const repo = await openRepository(storage, repositoryConfigSchema.parse({ storage: { type: 'local', options: { path: join(dir, 'repository') } } }), { create: true, workers: 1 });
  const journal = new Journal(context.stateDir);
  const run = (job: Partial<JobSpec> = {}) => runJob({
    engine, drivers: [driver], repository: repo, journal,
    job: { name: 'nightly', vms: { include: ['*'], exclude: [] }, mode: 'onHost', consistency: 'prefer', ...job },
  });
  const restore = async (vmName: string, folder: string) => {
    const [point] = (await repo.list({})).filter((p) => p.vm.name === vmName).sort((a, b) => b.time.localeCompare(a.time));
    await mkdir(folder, { recursive: true });
    return repo.restoreVm(point.id, folder, { format: 'raw' });
  };
  const avhdx = () => {
    const out: string[] = [];
    const walk = (d: string) => { for (const e of readdirSync(d, { withFileTypes: true })) { if (e.isDirectory()) walk(join(d, e.name)); else if (/\.avhdx$/i.test(e.name)) out.push(e.name); } };
    walk(join(dir, 'volumes'));
    return out;
  };
  return {
    dir, engine, driver, repo, run, restore, avhdx,
    async cleanup() { await engine.close(); await repo.close(); await base.cleanup(); },
  };
}

test.serial('a backup taken while the guests write: online VMs are application-consistent, fallbacks say why, nothing is left', async (t) => {
  const s = await backupSetup(smallLab());
  try {
    const result = await s.run();
    t.not(result.status, 'failed', result.error);
    const byName = Object.fromEntries(result.vms.map((v) => [v.vm.name, v]));
    t.is(byName.win1.method, 'online');
    t.is(byName.win1.level, 'application');
    t.is(byName.win1.outcome, 'success', byName.win1.error);
    t.is(byName['lin-noq'].method, 'crash-consistent');
    t.regex(byName['lin-noq'].reason, /VSS daemon/);
    t.is(byName.cold1.method, 'offline');
    for (const restored of await s.restore('win1', join(s.dir, 'restore-win1'))) {
      const verdict = await verifyRawImage(restored.path);
      t.true(verdict.consistent, `${restored.disk}: ${verdict.problems.join('; ')}`);
      t.true(verdict.lastTransaction > 0, 'the guest had written transactions');
    }
    t.deepEqual(await s.driver.listCheckpoints(), [], 'no checkpoint left');
    t.deepEqual(s.avhdx(), [], 'no AVHDX left');
    const events = readEvents(join(s.dir, 'events.jsonl')).filter((e) => e.vm === 'win1').map((e) => e.type)
      .filter((x) => !x.startsWith('guest-started') && x !== 'disk-created');
    t.deepEqual(events, [
      'checkpoint-requested', 'guest-quiesced', 'avhdx-created', 'avhdx-created', 'guest-thawed', 'checkpoint-created',
      'base-disk-read', 'base-disk-read', 'reference-point-created', 'merge-started', 'merged',
    ]);
  } finally {
    await s.cleanup();
  }
});

test.serial('with quiescing disabled (policy crash) and writes in flight, the verifier finds torn transactions', async (t) => {
  const s = await backupSetup(smallLab({ workload: { dataPages: 512, pageDelayMs: 3, txGapMs: 0 } }));
  try {
    let torn = 0;
    for (let i = 0; i < 8 && torn === 0; i++) {
      const result = await s.run({ consistency: 'crash', vms: { include: ['win1'], exclude: [] } });
      t.is(result.status, 'success', result.error);
      t.is(result.vms[0].level, 'crash');
      for (const restored of await s.restore('win1', join(s.dir, `restore-${i}`))) {
        const verdict = await verifyRawImage(restored.path);
        t.log(`run ${i} ${restored.disk}: ${verdict.consistent ? 'consistent' : verdict.problems.join('; ')}`);
        if (verdict.torn.length > 0) torn++;
      }
    }
    t.true(torn > 0, 'a crash-consistent backup with writes in flight shows torn transactions');
    t.deepEqual(s.avhdx(), []);
    t.deepEqual(await s.driver.listCheckpoints(), []);
  } finally {
    await s.cleanup();
  }
});
