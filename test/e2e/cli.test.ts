/** The CLI end to end, as a user runs it: `node core/cli/stillpoint.js ...` in a fresh directory. */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { writeHost } from '../fixtures/plugins/filehost/index.ts';
import { tempDir } from '../core/helpers.ts';
import { FILEHOST, stillpoint } from './run-cli.ts';

function fileHostConfig(dir: string, fail: Record<string, string> = {}, extra: Record<string, unknown> = {}): string {
  writeHost(join(dir, 'host'), [{ name: 'a' }, { name: 'b' }]);
  const file = join(dir, 'stillpoint.config.json');
  writeFileSync(file, JSON.stringify({
    plugins: [{ use: FILEHOST, options: { dir: './host', fail } }],
    drivers: [{ name: 'lab', type: 'filehost' }],
    repository: { storage: { type: 'local', options: { path: './repo' } } },
    jobs: [{ name: 'nightly', vms: ['*'], mode: 'onHost' }],
    ...extra,
  }));
  return file;
}

test('help lists every command', async (t) => {
  const r = await stillpoint(['--help'], { cwd: tempDir(t) });
  t.is(r.code, 0);
  for (const c of ['backup', 'check', 'list', 'restore', 'verify', 'cleanup', 'plugins', 'init']) t.regex(r.stdout, new RegExp(`^  ${c} `, 'm'));
  const bad = await stillpoint(['frobnicate'], { cwd: tempDir(t) });
  t.is(bad.code, 2);
  t.regex(bad.stderr, /unknown command "frobnicate"/);
});

test('quick start: lab init, check, backup, list, restore, verify, cleanup on the embedded default', async (t) => {
  const dir = tempDir(t);
  const init = await stillpoint(['lab', 'init', 'demo'], { cwd: dir });
  t.is(init.code, 0, init.stderr);
  const config = join('demo', 'stillpoint.config.json');

  const check = await stillpoint(['check', '--config', config], { cwd: dir });
  t.is(check.code, 0, check.stderr);
  t.regex(check.stdout, /VM win-app on hv01\n(.*\n)*? {4}ok {3}VM configuration version +9\.0 +needs >= 8\.0/);
  t.regex(check.stdout, /FAIL VM configuration version +5\.0 +needs >= 8\.0/);
  t.regex(check.stdout, /=> crash-consistent: fell back to a crash-consistent standard checkpoint \(policy "prefer"\) because cluster clu01 functional level: 8/);

  const backup = await stillpoint(['backup', '--config', config], { cwd: dir });
  t.is(backup.code, 0, backup.stdout + backup.stderr);
  t.regex(backup.stdout, /job default \(run \S+\): success/);
  t.regex(backup.stdout, /^VM +METHOD +WHY +READ +HOW READ +STORED +DURATION +RESULT$/m);
  for (const vm of ['win-app', 'linux-db', 'linux-web', 'legacy-erp', 'clu-files']) t.regex(backup.stdout, new RegExp(`^${vm} .* ok \\S+$`, 'm'));
  t.regex(backup.stdout, /^win-app +online +production checkpoint/m);

  const list = await stillpoint(['list', '--config', config, '--json'], { cwd: dir });
  t.is(list.code, 0);
  const points = JSON.parse(list.stdout) as Array<{ id: string; vm: { name: string } }>;
  t.is(points.length, 5);
  const web = points.find((p) => p.vm.name === 'linux-db')!;

  const restore = await stillpoint(['restore', web.id, '--to', 'out', '--config', config], { cwd: dir });
  t.is(restore.code, 0, restore.stderr);
  t.regex(restore.stdout, /^restored disk .* to .*out/m);
  t.true(readdirSync(join(dir, 'out')).length > 0);

  const verify = await stillpoint(['verify', '--deep', '--config', config], { cwd: dir });
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  t.regex(verify.stdout, /verify \(deep\): 5 restore point\(s\).*: ok/);

  const cleanup = await stillpoint(['cleanup', '--config', config], { cwd: dir });
  t.is(cleanup.stdout, 'nothing to clean up\n');

  const plugins = await stillpoint(['plugins', '--config', config], { cwd: dir });
  t.regex(plugins.stdout, /^lab +built-in lab +resolveDriver, /m);
  t.regex(plugins.stdout, /^stillpoint +built-in \(core\) +resolveTransport$/m);
});

test('exit status: 0 success, 3 partial, 1 failure, with the summary', async (t) => {
  const ok = tempDir(t);
  t.is((await stillpoint(['backup', '--config', fileHostConfig(ok)], { cwd: ok })).code, 0);
  const partial = tempDir(t);
  const p = await stillpoint(['backup', '--config', fileHostConfig(partial, { read: 'b' })], { cwd: partial });
  t.is(p.code, 3, p.stdout + p.stderr);
  t.regex(p.stdout, /^b +online .* failed: .*injected read failure$/m);
  const failed = tempDir(t);
  const f = await stillpoint(['backup', '--config', fileHostConfig(failed, { checkpoint: '*' })], { cwd: failed });
  t.is(f.code, 1);
  t.regex(f.stdout, /job nightly \(run \S+\): failed/);
});

test('a reader that stops reading the output (`backup | head -1`) does not stop the job', async (t) => {
  const dir = tempDir(t);
  const config = fileHostConfig(dir);
  const run = await stillpoint(['backup', '--config', config], {
    cwd: dir,
    // Close standard output after its first bytes, as `head -1` does.
    onSpawn: (child) => child.stdout!.once('data', () => child.stdout!.destroy()),
  });
  t.is(run.code, 0, run.stderr);
  t.notRegex(run.stderr, /EPIPE/);
  const list = await stillpoint(['list', '--config', config], { cwd: dir });
  t.is(list.stdout.trim().split('\n').length - 2, 2, list.stdout);
});

test('--json prints the job results for machines', async (t) => {
  const dir = tempDir(t);
  const r = await stillpoint(['backup', '--json', '--config', fileHostConfig(dir)], { cwd: dir });
  t.is(r.code, 0);
  const out = JSON.parse(r.stdout) as { jobs: Array<{ status: string; vms: Array<{ vm: { name: string }; outcome: string; bytesRead: number }> }> };
  t.is(out.jobs[0].status, 'success');
  t.deepEqual(out.jobs[0].vms.map((v) => [v.vm.name, v.outcome, v.bytesRead]), [['a', 'success', 131072], ['b', 'success', 131072]]);
  t.regex((out.jobs[0].vms[0] as { readMode?: string }).readMode ?? '', /^full read: no previous restore point/);
  // a driver without change tracking: every backup reads every allocated extent, and says why
  const again = await stillpoint(['backup', '--json', '--config', join(dir, 'stillpoint.config.json')], { cwd: dir });
  t.is(again.code, 0, again.stderr);
  const vms = (JSON.parse(again.stdout) as { jobs: Array<{ vms: Array<{ readMode?: string; bytesRead: number; disks: Array<{ fullRead: boolean }> }> }> }).jobs[0].vms;
  t.deepEqual(vms.map((v) => v.readMode), ['full read: driver "lab" has no change tracking', 'full read: driver "lab" has no change tracking']);
  t.is(vms[0].bytesRead, 131072);
});

test('non-terminal output: plain progress lines per VM and disk', async (t) => {
  const dir = tempDir(t);
  const r = await stillpoint(['backup', '--config', fileHostConfig(dir)], { cwd: dir });
  t.regex(r.stdout, /^a: reading disk scsi0 \(.*a\.raw\)$/m);
  t.regex(r.stdout, /^a: disk scsi0 stored: read 128 KiB, stored .* in /m);
  t.regex(r.stdout, /^a: checkpoint stillpoint-\S+ merged$/m);
  t.false(r.stdout.includes('\r'), 'no terminal redraws when stdout is not a terminal');
  // Again, without change tracking: everything is read, and the unchanged chunks are only hashed.
  const again = await stillpoint(['backup', '--config', join(dir, 'stillpoint.config.json')], { cwd: dir });
  t.regex(again.stdout, /^a: disk scsi0 stored: read 128 KiB \(\d+ KiB of it unchanged\), stored .* in .*\(full read: driver "lab" has no change tracking/m);
});

test('a wrong config exits 2 with every problem and its path', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'stillpoint.config.yaml');
  writeFileSync(file, 'drivers:\n  - { name: lab, type: lab }\nrepository:\n  storage: { type: local }\njobs:\n  - { name: nightly, mode: offhost }\nlimits: { perHost: 0 }\n');
  const r = await stillpoint(['backup'], { cwd: dir });
  t.is(r.code, 2);
  t.is(r.stderr, `stillpoint: config error: ${file}: 2 problems:\n  jobs[0].mode: expected "onHost" | "offHost" | "auto", got "offhost"\n  limits.perHost: expected a number >= 1, got 0\n`);
});

test('plugin options are validated by the plugin schema, reported by path', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'stillpoint.config.json'), JSON.stringify({
    plugins: [{ use: FILEHOST, options: { dir: 5, quiesce: true } }],
    drivers: [{ name: 'lab', type: 'filehost' }],
    repository: { storage: { type: 'local', options: { path: './repo' } } },
    jobs: [{ name: 'nightly' }],
  }));
  const r = await stillpoint(['check'], { cwd: dir });
  t.is(r.code, 2);
  t.regex(r.stderr, /plugins\[0\]\.options\.dir: expected string, got 5/);
  t.regex(r.stderr, /plugins\[0\]\.options\.quiesce: unknown field \(did you mean "quiesces"\?\)/);
});

test('an unknown plugin and an unknown job are usage errors that say what exists', async (t) => {
  const dir = tempDir(t);
  const file = fileHostConfig(dir);
  const r = await stillpoint(['backup', 'weekly', '--config', file], { cwd: dir });
  t.is(r.code, 2);
  t.regex(r.stderr, /no job named "weekly" in .* \(jobs: nightly\)/);
  const cfg = JSON.parse(readFileSync(file, 'utf8'));
  cfg.plugins.push('./missing-plugin.ts');
  writeFileSync(file, JSON.stringify(cfg));
  const p = await stillpoint(['check', '--config', file], { cwd: dir });
  t.is(p.code, 2);
  t.regex(p.stderr, /plugins\[1\]: plugin file .*missing-plugin\.ts does not exist/);
});

test('init writes a commented starter config that validates', async (t) => {
  const dir = tempDir(t);
  const r = await stillpoint(['init'], { cwd: dir });
  t.is(r.code, 0);
  const text = readFileSync(join(dir, 'stillpoint.config.yaml'), 'utf8');
  t.regex(text, /^# Stillpoint configuration/);
  t.is((await stillpoint(['init'], { cwd: dir })).code, 2, 'refuses to overwrite');
  t.is((await stillpoint(['lab', 'init', 'lab'], { cwd: dir })).code, 0);
  const check = await stillpoint(['check'], { cwd: dir });
  t.is(check.code, 0, check.stderr);
  t.regex(check.stdout, /job nightly \(consistency prefer, mode onHost\)/);
  t.true(existsSync(join(dir, 'stillpoint.config.yaml')));
});
