/**
 * `stillpoint lab init DIR` and the prerequisite decision for every demo VM under each
 * consistency policy (the engine's own decision function on the lab's inventory).
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import test from 'ava';
import { main } from '../../core/cli/main.ts';
import { decide, evaluatePrerequisites } from '../../core/engine/prerequisites.ts';
import type { BackupMethod } from '../../core/engine/types.ts';
import { LabDriver } from '../../plugins/lab/driver.ts';

async function cli(argv: string[], cwd: string) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c) => { out += c; });
  stderr.on('data', (c) => { err += c; });
  const code = await main(argv, { stdout, stderr, cwd, env: process.env });
  return { code, out, err };
}

const expected: Record<string, Record<'prefer' | 'require' | 'crash', [BackupMethod, RegExp]>> = {
  'win-app': { prefer: ['online', /production checkpoint/], require: ['online', /production checkpoint/], crash: ['crash-consistent', /policy "crash"/] },
  'linux-db': { prefer: ['online', /VSS daemon present/], require: ['online', /production checkpoint/], crash: ['crash-consistent', /policy "crash"/] },
  'linux-web': { prefer: ['crash-consistent', /hv_vss_daemon/], require: ['fail', /policy "require".*hv_vss_daemon/], crash: ['crash-consistent', /policy "crash"/] },
  'legacy-erp': { prefer: ['crash-consistent', /configuration version: 5\.0/], require: ['fail', /configuration version: 5\.0/], crash: ['crash-consistent', /policy "crash"/] },
  'clu-files': { prefer: ['crash-consistent', /functional level: 8/], require: ['fail', /functional level: 8/], crash: ['crash-consistent', /policy "crash"/] },
};

test('lab init creates the demo; each demo VM gets the expected decision under each policy', async (t) => {
  const parent = await mkdtemp(join(tmpdir(), 'stillpoint-demo-'));
  try {
    const r = await cli(['lab', 'init', 'demo'], parent);
    t.is(r.code, 0, r.err);
    t.regex(r.out, /Created a demo lab/);
    const dir = join(parent, 'demo');
    t.true(existsSync(join(dir, 'lab.json')));
    const config = JSON.parse(readFileSync(join(dir, 'stillpoint.config.json'), 'utf8'));
    t.is(config.drivers[0].type, 'lab');
    t.is(config.repository.storage.options.path, './repository');
    t.is((await cli(['lab', 'init', 'demo'], parent)).code, 1, 'refuses a directory that is not empty');
    t.is((await cli(['lab', 'init'], parent)).code, 2, 'usage error without DIR');

    const driver = new LabDriver({ name: 'lab', dir, guests: false });
    try {
      const inventory = await driver.inventory();
      t.deepEqual(inventory.vms.map((v) => v.name).sort(), Object.keys(expected).sort());
      for (const vm of inventory.vms) {
        for (const disk of vm.disks) t.true(existsSync(disk.path), `${vm.name}: base disk ${disk.path} exists`);
        for (const policy of ['prefer', 'require', 'crash'] as const) {
          const quiescing = { driverQuiesces: driver.quiescesOnCheckpoint };
          const decision = decide(evaluatePrerequisites(vm, inventory, quiescing), policy, quiescing);
          const [method, reason] = expected[vm.name][policy];
          t.is(decision.method, method, `${vm.name} under "${policy}": ${decision.reason}`);
          t.regex(decision.reason, reason, `${vm.name} under "${policy}"`);
        }
      }
    } finally {
      await driver.close();
    }
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
