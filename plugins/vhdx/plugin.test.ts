import test from 'ava';
import { spawnSync } from 'node:child_process';
import { Engine } from '../../core/engine/engine.ts';
import vhdx, { optionsSchema, vhdxReader } from './index.ts';

test('the plugin taps resolveReader for .vhdx and .avhdx paths only', (t) => {
  const engine = new Engine();
  const plugin = vhdx(optionsSchema.parse({}), { configDir: '.', stateDir: '.' });
  t.is(plugin.name, 'vhdx');
  plugin.apply(engine);
  t.is(engine.hooks.resolveReader.call('/vms/a/disk.vhdx')?.name, 'vhdx');
  t.is(engine.hooks.resolveReader.call('/vms/a/Disk_8F0E.AVHDX')?.name, 'vhdx');
  t.is(engine.hooks.resolveReader.call('/vms/a/disk.vmdk'), undefined);
  t.true(vhdxReader().canOpen('x.avhdx'));
  t.throws(() => optionsSchema.parse({ nope: 1 }));
});

test('a missing native library gives an error that says to run npm run build:native', (t) => {
  const r = spawnSync(process.execPath, ['--import=tsx', '-e',
    `import('./plugins/vhdx/index.ts').then(m => m.VhdxDisk.open('/nonexistent.vhdx')).catch(e => { console.log(e.message); })`],
  { env: { ...process.env, STILLPOINT_VHDX_LIB: '/nonexistent/libstillpoint_vhdx.so' }, encoding: 'utf8' });
  t.regex(r.stdout, /npm run build:native/);
});

test('opening a file that is not a VHDX is a CorruptImageError naming the file', async (t) => {
  const { VhdxDisk } = await import('./index.ts');
  const { CorruptImageError } = await import('../../core/errors.ts');
  const err = await t.throwsAsync(VhdxDisk.open('package.json'), { instanceOf: CorruptImageError });
  t.regex(err!.message, /package\.json/);
});
