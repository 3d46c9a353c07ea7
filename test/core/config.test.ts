import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { loadConfig, parseConfig } from '../../core/config/load.ts';
import { ConfigError } from '../../core/errors.ts';
import { tempDir } from './helpers.ts';

const base = () => ({
  drivers: [{ name: 'lab1', type: 'lab', options: { dir: './lab' } }],
  repository: { storage: { type: 'local', options: { path: './repo' } } },
  jobs: [{ name: 'nightly', vms: ['*'] }],
}) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function problems(mutate: (c: Record<string, any>) => void, env: NodeJS.ProcessEnv = {}): string[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const c = base();
  mutate(c);
  try {
    parseConfig(c, { env });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

test('a valid config gets its defaults', (t) => {
  const c = parseConfig(base(), { env: {} });
  t.is(c.jobs[0].mode, 'auto');
  t.is(c.jobs[0].consistency, 'prefer');
  t.deepEqual(c.limits, { perHost: 2, perVolume: 1, perProxy: 2, perRepository: 4, vmsPerSnapshot: 16 });
  t.is(c.stateDir, '.stillpoint-state');
  t.is(c.repository.chunkSize, 262144);
});

const cases: Array<[string, (c: Record<string, any>) => void, string[]]> = [ // eslint-disable-line @typescript-eslint/no-explicit-any
  ['mode misspelt', (c) => { c.jobs[0].mode = 'offhost'; }, ['jobs[0].mode: expected "onHost" | "offHost" | "auto", got "offhost"']],
  ['consistency unknown', (c) => { c.jobs[0].consistency = 'always'; }, ['jobs[0].consistency: expected "require" | "prefer" | "crash", got "always"']],
  ['no drivers', (c) => { delete c.drivers; }, ['drivers: expected a list, got nothing']],
  ['empty drivers', (c) => { c.drivers = []; }, ['drivers: expected at least 1 item, got 0']],
  ['driver without type', (c) => { delete c.drivers[0].type; }, ['drivers[0].type: expected string, got nothing']],
  ['driver name with a space', (c) => { c.drivers[0].name = 'lab one'; }, ['drivers[0].name: expected a driver name of letters, digits, ".", "_" or "-", got "lab one"']],
  ['unknown field with a suggestion', (c) => { c.jobs[0].mdoe = 'onHost'; }, ['jobs[0].mdoe: unknown field (did you mean "mode"?)']],
  ['unknown top-level field', (c) => { c.repositry = {}; }, ['repositry: unknown field (did you mean "repository"?)']],
  ['limit of zero', (c) => { c.limits = { perHost: 0 }; }, ['limits.perHost: expected a number >= 1, got 0']],
  ['limit not an integer', (c) => { c.limits = { perVolume: 1.5 }; }, ['limits.perVolume: expected an integer, got 1.5']],
  ['limit as a string', (c) => { c.limits = { perProxy: '4' }; }, ['limits.perProxy: expected number, got "4"']],
  ['freeze timeout too long', (c) => { c.timeouts = { freezeSeconds: 3600 }; }, ['timeouts.freezeSeconds: expected a number <= 600, got 3600']],
  ['no jobs', (c) => { c.jobs = []; }, ['jobs: expected at least 1 item, got 0']],
  ['duplicate job names', (c) => { c.jobs.push({ name: 'nightly' }); }, ['jobs[1].name: "nightly" is already the name of jobs[0]; names must be unique']],
  ['job names an unknown driver', (c) => { c.jobs[0].vms = { include: ['*'], drivers: ['hv9'] }; }, ['jobs[0].vms.drivers[0]: no driver is named "hv9" (drivers: lab1)']],
  ['vms neither list nor selector', (c) => { c.jobs[0].vms = 'web*'; }, ['jobs[0].vms: expected a list or an object, got "web*"']],
  ['selector field misspelt', (c) => { c.jobs[0].vms = { includes: ['*'] }; }, ['jobs[0].vms.includes: unknown field (did you mean "include"?)']],
  ['plugin entry of the wrong type', (c) => { c.plugins = [5]; }, ['plugins[0]: expected string or an object, got 5']],
  ['plugin object without use', (c) => { c.plugins = [{ options: {} }]; }, ['plugins[0].use: expected string, got nothing']],
  ['chunk size too small (repository schema)', (c) => { c.repository.chunkSize = 1024; }, ['repository.chunkSize: expected a number >= 65536, got 1024']],
  ['storage missing', (c) => { c.repository = {}; }, ['repository.storage: expected an object, got nothing']],
  ['retention negative', (c) => { c.retention = { keepLast: -1 }; }, ['retention.keepLast: expected a number >= 0, got -1']],
  ['missing env variable', (c) => { c.repository.storage.options.password = '${env:SFTP_PASSWORD}'; }, ['repository.storage.options.password: environment variable SFTP_PASSWORD is not set (referenced as "${env:SFTP_PASSWORD}")']],
  ['several problems at once', (c) => { c.jobs[0].mode = 'offhost'; c.limits = { perHost: 0 }; delete c.drivers[0].type; }, [
    'drivers[0].type: expected string, got nothing',
    'jobs[0].mode: expected "onHost" | "offHost" | "auto", got "offhost"',
    'limits.perHost: expected a number >= 1, got 0',
  ]],
];

for (const [title, mutate, expected] of cases) {
  test(`wrong config: ${title}`, (t) => {
    t.deepEqual(problems(mutate).sort(), [...expected].sort());
  });
}

test('secrets come from ${env:NAME}', (t) => {
  const c = base();
  c.repository.storage.options.password = 'pw-${env:PW}';
  const parsed = parseConfig(c, { env: { PW: 's3cret' } });
  t.is((parsed.repository.storage.options as { password: string }).password, 'pw-s3cret');
});

test('ConfigError message lists every problem and names the file', (t) => {
  const c = base();
  c.jobs[0].mode = 'x';
  c.limits = { perHost: 0 };
  const e = t.throws(() => parseConfig(c, { env: {}, where: '/etc/stillpoint.config.yaml' }), { instanceOf: ConfigError });
  t.is(e.message, '/etc/stillpoint.config.yaml: 2 problems:\n  jobs[0].mode: expected "onHost" | "offHost" | "auto", got "x"\n  limits.perHost: expected a number >= 1, got 0');
});

test('cosmiconfig finds stillpoint.config.yaml, .stillpointrc.json, package.json#stillpoint; --config overrides', async (t) => {
  const dir = tempDir(t);
  const yaml = 'drivers:\n  - { name: lab1, type: lab }\nrepository:\n  storage: { type: local, options: { path: ./r } }\njobs:\n  - name: yaml-job\n';
  mkdirSync(join(dir, 'a', 'sub'), { recursive: true });
  writeFileSync(join(dir, 'a', 'package.json'), '{"name":"x"}');
  writeFileSync(join(dir, 'a', 'stillpoint.config.yaml'), yaml);
  const found = await loadConfig({ cwd: join(dir, 'a', 'sub'), env: {} });
  t.is(found.config.jobs[0].name, 'yaml-job');
  t.is(found.stateDir, join(dir, 'a', '.stillpoint-state'));

  mkdirSync(join(dir, 'b'));
  writeFileSync(join(dir, 'b', 'package.json'), JSON.stringify({ name: 'y', stillpoint: { ...base(), jobs: [{ name: 'pkg-job' }] } }));
  t.is((await loadConfig({ cwd: join(dir, 'b'), env: {} })).config.jobs[0].name, 'pkg-job');

  mkdirSync(join(dir, 'c'));
  writeFileSync(join(dir, 'c', 'package.json'), '{"name":"z"}');
  writeFileSync(join(dir, 'c', '.stillpointrc.json'), JSON.stringify({ ...base(), jobs: [{ name: 'rc-job' }] }));
  t.is((await loadConfig({ cwd: join(dir, 'c'), env: {} })).config.jobs[0].name, 'rc-job');

  t.is((await loadConfig({ cwd: join(dir, 'c'), configPath: '../a/stillpoint.config.yaml', env: {} })).config.jobs[0].name, 'yaml-job');
});

test('a TypeScript config file is loaded', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'package.json'), '{"name":"x","type":"module"}');
  writeFileSync(join(dir, 'stillpoint.config.ts'), `const jobs: Array<{ name: string }> = [{ name: 'ts-job' }];\nexport default ${JSON.stringify({ ...base(), jobs: undefined })
    .replace('"jobs":undefined', '')} as Record<string, unknown>;\n`.replace('} as', ', jobs } as'));
  t.is((await loadConfig({ cwd: dir, env: {} })).config.jobs[0].name, 'ts-job');
});

test('no config and a missing --config file say what to do', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'package.json'), '{"name":"x"}');
  const e = await t.throwsAsync(loadConfig({ cwd: dir, env: {} }), { instanceOf: ConfigError });
  t.regex(e.message, /^no config found \(looked for package\.json, \.stillpointrc.*; write one with "stillpoint init" or pass --config PATH$/);
  const e2 = await t.throwsAsync(loadConfig({ cwd: dir, configPath: 'nope.yaml', env: {} }), { instanceOf: ConfigError });
  t.is(e2.message, `${join(dir, 'nope.yaml')}: config file not found`);
});

test('a YAML syntax error names the file', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'stillpoint.config.yaml'), 'jobs: [\n');
  const e = await t.throwsAsync(loadConfig({ cwd: dir, configPath: 'stillpoint.config.yaml', env: {} }), { instanceOf: ConfigError });
  t.true(e.message.startsWith(`${join(dir, 'stillpoint.config.yaml')}: cannot read the config:`), e.message);
});
