/**
 * The SIGKILL test on the lab simulator (a real driver with real VHDX chains): kill the backup at
 * a step, run `stillpoint cleanup`, and check with the lab driver that no Stillpoint checkpoint is left.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { Journal } from '../../core/journal/journal.ts';
import { Session } from '../../core/session.ts';
import { tempDir } from '../core/helpers.ts';
import { stillpoint, waitFor } from './run-cli.ts';

const PAUSER = fileURLToPath(new URL('../fixtures/plugins/pauser/index.ts', import.meta.url));

async function leftCheckpoints(dir: string, config: string): Promise<string[]> {
  const session = await Session.open({ cwd: dir, configPath: config, env: process.env });
  try {
    return (await session.drivers()[0].listCheckpoints()).map((c) => `${c.vmName}:${c.name}`);
  } finally {
    await session.close();
  }
}

for (const step of ['checkpointCreated', 'diskRead', 'beforeMerge']) {
  test.serial(`lab: SIGKILL at ${step}, then cleanup merges every checkpoint back`, async (t) => {
    const dir = tempDir(t);
    t.is((await stillpoint(['lab', 'init', 'demo'], { cwd: dir })).code, 0);
    const config = join(dir, 'demo', 'stillpoint.config.json');
    const cfg = JSON.parse(readFileSync(config, 'utf8'));
    cfg.plugins.push(PAUSER);
    cfg.jobs[0].vms = { include: ['linux-db'] };
    writeFileSync(config, JSON.stringify(cfg));
    const ready = join(dir, 'ready');
    const killed = await stillpoint(['backup', '--config', config], {
      cwd: dir, env: { STILLPOINT_TEST_PAUSE_AT: step, STILLPOINT_TEST_READY_FILE: ready },
      onSpawn: (child) => { void waitFor(ready, 60_000).then(() => child.kill('SIGKILL')); },
    });
    t.true(existsSync(ready), `never reached ${step}: ${killed.stdout}${killed.stderr}`);
    t.deepEqual((await leftCheckpoints(dir, config)).length, 1, 'the killed run left its checkpoint');

    const cleanup = await stillpoint(['cleanup', '--config', config], { cwd: dir });
    t.is(cleanup.code, 0, cleanup.stdout + cleanup.stderr);
    t.regex(cleanup.stdout, /^done: merged orphaned checkpoint stillpoint-\S+ of VM linux-db/m);
    t.deepEqual(await leftCheckpoints(dir, config), []);
    t.deepEqual(await new Journal(join(dir, 'demo', '.stillpoint-state')).entries(), []);
    const backup = await stillpoint(['backup', '--config', config], { cwd: dir });
    t.is(backup.code, 0, backup.stdout + backup.stderr);
  });
}
