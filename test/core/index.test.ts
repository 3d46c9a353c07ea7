import test from 'ava';
import * as api from '../../core/index.ts';

test('the public API exports the engine, pipeline, config, journal and repository entry points', (t) => {
  for (const name of ['Engine', 'definePlugin', 'runJob', 'loadConfig', 'parseConfig', 'Journal', 'reconcile', 'loadPlugins', 'Session', 'openRepository', 'StillpointError', 'ConfigError']) {
    t.is(typeof (api as Record<string, unknown>)[name], 'function', name);
  }
  const engine = new api.Engine();
  t.deepEqual(engine.plugins.map((p) => p.name), ['stillpoint']);
});

test('stillpoint plugins records which plugin tapped which hook', async (t) => {
  const engine = new api.Engine();
  await engine.use({ name: 'mine', apply(e) { e.hooks.vmDone.tapPromise('mine', async () => {}); e.hooks.resolveReader.tap('mine', () => undefined); } }, './mine.ts');
  t.deepEqual(engine.plugins.find((p) => p.name === 'mine'), { name: 'mine', source: './mine.ts', hooks: ['vmDone', 'resolveReader'] });
  await t.throwsAsync(engine.use({ name: 'mine', apply() {} }), { message: 'plugin "mine" is loaded twice. list each plugin once in the config' });
  t.throws(() => engine.reader('/x/disk.qcow2'), { message: '/x/disk.qcow2: no disk reader can open this file. loaded plugins tapping resolveReader (mine) do not serve it; check the type and the plugin\'s options' });
});
