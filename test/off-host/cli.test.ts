/**
 * Off-host backup as a user runs it: `stillpoint lab init`, the off-host plugin in the config, and
 * `stillpoint backup` in mode auto. The default proxy is `stillpoint proxy` started on this machine.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { STILLPOINT_BIN } from '../../plugins/off-host/index.ts';
import type { JobResult } from '../../core/engine/types.ts';

const run = promisify(execFile);

async function cli(cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [STILLPOINT_BIN, ...args], { cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, DEBUG: '' } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test('mode auto reads each VM off-host where a proxy sees its volume and on-host elsewhere, saying which and why', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-cli-offhost-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const init = await cli(dir, 'lab', 'init', '.');
  t.is(init.code, 0, init.stderr);
  const configFile = join(dir, 'stillpoint.config.json');
  const config = JSON.parse(await readFile(configFile, 'utf8'));
  // the default local proxy, told it sees only the lab's volume vol1 (csv1 is not seen by any proxy)
  config.plugins.push({
    use: 'off-host',
    options: { proxies: [{ name: 'local', command: [process.execPath, STILLPOINT_BIN, 'proxy', '--config-search', '--name', 'local'], volumes: ['*/vol1'] }] },
  });
  config.jobs[0].mode = 'auto';
  await writeFile(configFile, JSON.stringify(config, null, 2));

  const backup = await cli(dir, 'backup', '--json');
  t.not(backup.code, 1, backup.stderr);
  const result = (JSON.parse(backup.stdout) as { jobs: JobResult[] }).jobs[0];
  const offHost = result.vms.filter((v) => /read off-host: lab-snapshot snapshots volume .*\/vol1 and transport off-host serves it/.test(v.reason));
  const onHost = result.vms.filter((v) => /read on-host: transport off-host: no configured proxy sees volume ".*\/csv1"/.test(v.reason));
  t.deepEqual(offHost.map((v) => v.vm.name).sort(), ['legacy-erp', 'linux-db', 'linux-web', 'win-app']);
  t.deepEqual(onHost.map((v) => v.vm.name), ['clu-files']);
  for (const v of [...offHost, ...onHost]) t.is(v.outcome, 'success', `${v.vm.name}: ${v.error}`);

  const events = (await readFile(join(dir, 'events.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { type: string; volume?: string; vm?: string; path?: string });
  t.is(events.filter((e) => e.type === 'volume-snapshot-created').length, 1, 'one snapshot: vol1');
  t.is(events.filter((e) => e.type === 'volume-snapshot-deleted').length, 1);
  const reads = events.filter((e) => e.type === 'base-disk-read');
  t.true(reads.filter((e) => e.vm !== 'clu-files').every((e) => e.path!.includes('/snapshots/')), 'off-host VMs were read in the snapshot');
  t.true(reads.filter((e) => e.vm === 'clu-files').every((e) => e.path!.includes('/volumes/csv1/')), 'the on-host VM was read where it is');
  t.deepEqual((await readdir(join(dir, 'snapshots'))).filter((n) => n.startsWith('stillpoint')), [], 'no snapshot left');

  const cleanup = await cli(dir, 'cleanup');
  t.is(cleanup.code, 0, cleanup.stderr);
});
