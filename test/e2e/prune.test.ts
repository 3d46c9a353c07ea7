/**
 * `stillpoint prune` end to end: retention applied to a demo lab's restore points, then garbage
 * collection frees what no restore point references; a dry run says exactly what the real run
 * then does; a backup holding the repository defers the collection (exit 3).
 */
import { hostname } from 'node:os';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { tempDir } from '../core/helpers.ts';
import { stillpoint } from './run-cli.ts';

interface PruneJson {
  dryRun: boolean;
  jobs: Array<{ job: string; kept: number; removed: Array<{ id: string }> }>;
  gc: { deletedChunks: number; deletedTables: number; deletedPacks: number; repackedPacks: number; packBytesFreed: number; deferred: boolean; reason?: string };
}

/** A demo lab backed up twice (the guests write between the runs), without retention. */
async function labBackedUpTwice(dir: string): Promise<string> {
  const init = await stillpoint(['lab', 'init', 'demo'], { cwd: dir });
  if (init.code !== 0) throw new Error(init.stderr);
  const config = join('demo', 'stillpoint.config.json');
  for (let i = 0; i < 2; i++) {
    const backup = await stillpoint(['backup', '--config', config], { cwd: dir });
    if (backup.code !== 0) throw new Error(backup.stdout + backup.stderr);
  }
  return config;
}

function setRetention(dir: string, config: string, retention: unknown): void {
  const file = join(dir, config);
  const c = JSON.parse(readFileSync(file, 'utf8'));
  c.jobs[0].retention = retention;
  writeFileSync(file, JSON.stringify(c, null, 2));
}

test('prune applies retention and frees the unreferenced chunks; its dry run says exactly that and removes nothing', async (t) => {
  const dir = tempDir(t, 'stillpoint-prune-e2e-');
  const config = await labBackedUpTwice(dir);
  const count = async () => (JSON.parse((await stillpoint(['list', '--config', config, '--json'], { cwd: dir })).stdout) as unknown[]).length;
  t.is(await count(), 10);

  // Without retention, nothing is removed (the collection finds nothing either).
  const none = await stillpoint(['prune', '--config', config], { cwd: dir });
  t.is(none.code, 0, none.stderr);
  t.regex(none.stdout, /^job default: no retention configured: all 10 restore point\(s\) kept$/m);
  t.regex(none.stdout, /^garbage collection: nothing was unreferenced$/m);

  setRetention(dir, config, { keepLast: 1 });
  const dry = await stillpoint(['prune', '--dry-run', '--config', config], { cwd: dir });
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, /^job default: would remove 5 restore point\(s\), 5 kept$/m);
  t.regex(dry.stdout, /^garbage collection: would delete \d+ chunk\(s\) and \d+ chunk table page\(s\); \d+ pack\(s\) to delete, \d+ to rewrite; .* of packed chunks to free$/m);
  t.is(await count(), 10, 'a dry run removes nothing');
  const planned = JSON.parse((await stillpoint(['prune', '--dry-run', '--json', '--config', config], { cwd: dir })).stdout) as PruneJson;
  t.true(planned.dryRun);
  t.true(planned.gc.deletedChunks > 0 && planned.gc.packBytesFreed > 0, JSON.stringify(planned.gc));

  const real = await stillpoint(['prune', '--json', '--config', config], { cwd: dir });
  t.is(real.code, 0, real.stderr);
  const done = JSON.parse(real.stdout) as PruneJson;
  t.deepEqual(done.jobs[0].removed.map((r) => r.id), planned.jobs[0].removed.map((r) => r.id));
  t.deepEqual(done.gc, planned.gc, 'the dry run said what the real run did');
  t.is(await count(), 5);

  // What is left is whole: every chunk of the remaining restore points reads back and hashes.
  const verify = await stillpoint(['verify', '--deep', '--config', config], { cwd: dir });
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  t.regex(verify.stdout, /verify \(deep\): 5 restore point\(s\).*: ok/);
  const again = await stillpoint(['prune', '--config', config], { cwd: dir });
  t.regex(again.stdout, /^job default: removed 0 restore point\(s\), 5 kept$/m);
  t.regex(again.stdout, /^garbage collection: nothing was unreferenced$/m);
});

test('prune while a backup holds the repository removes the restore points but defers the collection (exit 3)', async (t) => {
  const dir = tempDir(t, 'stillpoint-prune-e2e-');
  const config = await labBackedUpTwice(dir);
  setRetention(dir, config, { keepLast: 1 });
  // The writer lock of a backup in a live process of this host (this test's own process).
  const lock = join(dir, 'demo', 'repository', 'locks', 'writer');
  await mkdir(join(lock, '..'), { recursive: true });
  const now = new Date().toISOString();
  writeFileSync(lock, JSON.stringify({ format: 'stillpoint-lock', host: hostname(), pid: process.pid, session: 'test', purpose: 'backup', acquiredAt: now, heartbeatAt: now }));
  const run = await stillpoint(['prune', '--config', config], { cwd: dir });
  t.is(run.code, 3, run.stdout + run.stderr);
  t.regex(run.stdout, /^job default: removed 5 restore point\(s\), 5 kept$/m);
  t.regex(run.stdout, /^garbage collection deferred, nothing deleted: .*locked by backup on host .* \(run `stillpoint prune` again once it is done\)$/m);
});

test('prune names an unknown job (exit 2)', async (t) => {
  const dir = tempDir(t, 'stillpoint-prune-e2e-');
  const init = await stillpoint(['lab', 'init', 'demo'], { cwd: dir });
  t.is(init.code, 0, init.stderr);
  const run = await stillpoint(['prune', 'weekly', '--config', join('demo', 'stillpoint.config.json')], { cwd: dir });
  t.is(run.code, 2);
  t.regex(run.stderr, /no job named "weekly" in .* \(jobs: default\)/);
});
