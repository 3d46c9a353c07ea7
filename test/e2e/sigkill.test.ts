/**
 * The SIGKILL test: the backup runs as a child process, a real test plugin (loaded by path) pauses
 * at a named step and says so through a file, the test kills the process with SIGKILL, then
 * `stillpoint cleanup` must leave nothing behind: no frozen guest, no checkpoint, no volume
 * snapshot, an empty journal.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { FileHost, optionsSchema, writeHost } from '../fixtures/plugins/filehost/index.ts';
import { Journal } from '../../core/journal/journal.ts';
import { tempDir } from '../core/helpers.ts';
import { FILEHOST, stillpoint, waitFor } from './run-cli.ts';

function writeConfig(dir: string): string {
  const file = join(dir, 'stillpoint.config.json');
  writeFileSync(file, JSON.stringify({
    plugins: [{ use: FILEHOST, options: { dir: './host', quiesces: false } }],
    drivers: [{ name: 'lab', type: 'filehost' }],
    repository: { storage: { type: 'local', options: { path: './repo' } } },
    jobs: [{ name: 'nightly', vms: ['*'], mode: 'offHost', consistency: 'require' }],
  }));
  return file;
}

const steps: Array<{ step: string; left: (h: FileHost) => string[] }> = [
  { step: 'freeze', left: (h) => h.frozen() },
  { step: 'checkpoint', left: (h) => [...h.frozen(), ...h.checkpoints().map((c) => c.name)] },
  { step: 'snapshot', left: (h) => [...h.checkpoints().map((c) => c.name), ...h.snapshots().map((s) => s.id)] },
  { step: 'read', left: (h) => [...h.checkpoints().map((c) => c.name), ...h.snapshots().map((s) => s.id)] },
  { step: 'merge', left: (h) => [...h.checkpoints().map((c) => c.name), ...h.snapshots().map((s) => s.id)] },
];

for (const { step, left } of steps) {
  test.serial(`SIGKILL during "${step}", then cleanup leaves nothing behind`, async (t) => {
    const dir = tempDir(t);
    writeHost(join(dir, 'host'), [{ name: 'web01' }]);
    const config = writeConfig(dir);
    const ready = join(dir, 'ready');
    const run = stillpoint(['backup', '--config', config], {
      cwd: dir, env: { STILLPOINT_TEST_PAUSE_AT: step, STILLPOINT_TEST_READY_FILE: ready },
      onSpawn: (child) => {
        void waitFor(ready, 60_000).then((ok) => { if (ok) child.kill('SIGKILL'); else child.kill('SIGKILL'); });
      },
    });
    const killed = await run;
    t.true(existsSync(ready), `the backup never reached "${step}": ${killed.stdout}\n${killed.stderr}`);
    t.is(killed.signal, 'SIGKILL');
    const host = new FileHost(join(dir, 'host'), optionsSchema.parse({ dir: join(dir, 'host') }));
    t.true(left(host).length > 0, 'the killed run left something to clean up');
    t.true((await new Journal(join(dir, '.stillpoint-state')).entries()).length > 0, 'the journal knows about it');

    const cleanup = await stillpoint(['cleanup', '--config', config], { cwd: dir });
    t.is(cleanup.code, 0, cleanup.stdout + cleanup.stderr);
    t.regex(cleanup.stdout, /^done: /m);
    t.deepEqual(host.frozen(), [], 'no frozen guest');
    t.deepEqual(host.checkpoints().map((c) => c.name), [], 'no checkpoint');
    t.deepEqual(host.snapshots().map((s) => s.id), [], 'no volume snapshot');
    t.deepEqual(await new Journal(join(dir, '.stillpoint-state')).entries(), [], 'journal empty');

    const again = await stillpoint(['cleanup', '--config', config], { cwd: dir });
    t.is(again.stdout.trim(), 'nothing to clean up');
    const backup = await stillpoint(['backup', '--config', config], { cwd: dir });
    t.is(backup.code, 0, `a backup after cleanup succeeds: ${backup.stdout}${backup.stderr}`);
  });
}

test.serial('the next backup reconciles what a killed run left, and says so', async (t) => {
  const dir = tempDir(t);
  writeHost(join(dir, 'host'), [{ name: 'web01' }]);
  const config = writeConfig(dir);
  const ready = join(dir, 'ready');
  await stillpoint(['backup', '--config', config], {
    cwd: dir, env: { STILLPOINT_TEST_PAUSE_AT: 'checkpoint', STILLPOINT_TEST_READY_FILE: ready },
    onSpawn: (child) => { void waitFor(ready, 60_000).then(() => child.kill('SIGKILL')); },
  });
  const backup = await stillpoint(['backup', '--config', config], { cwd: dir });
  t.is(backup.code, 0, backup.stdout + backup.stderr);
  t.regex(backup.stdout, /reconcile: thawed VM web01 \(vm-1\), left frozen by run \S+ \(quiescer filefreeze\)/);
  t.regex(backup.stdout, /reconcile: merged orphaned checkpoint stillpoint-\S+ of VM web01 \(vm-1\) back \(left by run \S+\)/);
  const host = new FileHost(join(dir, 'host'), optionsSchema.parse({ dir: join(dir, 'host') }));
  t.deepEqual(host.checkpoints(), []);
  t.deepEqual(host.frozen(), []);
});
