import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync, appendFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import btrfsPlugin from '../../plugins/btrfs/index.ts';
import { BtrfsSnapshotProvider } from '../../plugins/btrfs/provider.ts';
import { Engine } from '../../core/engine/engine.ts';
import { makeLoopBtrfs, skipBtrfs, type LoopBtrfs } from './helpers/btrfs-volume.ts';

const skip = skipBtrfs();
const btrfsTest = skip ? test.skip : test.serial;
if (skip) test('btrfs provider tests (skipped)', (t) => { t.log(`skipped: ${skip}; they run under CI=true`); t.pass(); });

let fs: LoopBtrfs;
test.before(() => { if (!skip) fs = makeLoopBtrfs(); });
test.after.always(() => { fs?.cleanup(); });

btrfsTest('serves btrfs subvolumes only, and says why not', async (t) => {
  const provider = new BtrfsSnapshotProvider();
  const vol = fs.subvolume('serves');
  mkdirSync(join(vol, 'plain'));
  t.true(await provider.serves({ name: 'v', path: vol }));
  t.true(await provider.serves({ name: 'top', path: fs.mount }), 'the top-level subvolume is a subvolume too');
  t.false(await provider.serves({ name: 'p', path: join(vol, 'plain') }));
  t.regex(provider.whyNot({ name: 'p', path: join(vol, 'plain') })!, /not the root of a subvolume/);
  t.false(await provider.serves({ name: 't', path: tmpdir() }));
  t.regex(provider.whyNot({ name: 't', path: fs.dir })!, /not on a btrfs filesystem/);
  t.false(await provider.serves({ name: 'gone', path: join(vol, 'missing') }));
  const error = await t.throwsAsync(provider.create({ name: 'p', path: join(vol, 'plain') }, { jobId: 'j' }));
  t.regex(error!.message, /volume "p".*not the root of a subvolume.*btrfs subvolume create/s);
});

btrfsTest('a read-only snapshot freezes the volume as it was; present maps paths; delete removes it once', async (t) => {
  const state = await mkdtemp(join(tmpdir(), 'stillpoint-btrfs-state-'));
  t.teardown(() => rm(state, { recursive: true, force: true }));
  const provider = new BtrfsSnapshotProvider({ stateFile: join(state, 'volumes.json') });
  const vol = fs.subvolume('vms');
  mkdirSync(join(vol, 'vm1'));
  const disk = join(vol, 'vm1', 'disk.vhdx');
  writeFileSync(disk, Buffer.alloc(1 << 20, 7));
  const volume = { name: 'vms', path: vol };

  const snap = await provider.create(volume, { jobId: 'job-42' });
  t.is(snap.provider, 'btrfs');
  t.is(snap.jobId, 'job-42');
  t.is(snap.volume.path, vol);
  t.true(basename(snap.id).startsWith('stillpoint@job-42@vms@'));
  t.is(snap.path, snap.id);
  // read-only, and really a subvolume
  t.regex(execFileSync('btrfs', ['property', 'get', snap.path!, 'ro'], { encoding: 'utf8' }), /ro=true/);
  t.is(statSync(snap.path!).ino, 256);
  // the default snapshot directory is a subvolume of its own inside the volume
  t.is(statSync(join(vol, '.stillpoint-snapshots')).ino, 256);

  // the live volume moves on; the snapshot does not
  appendFileSync(disk, Buffer.alloc(4096, 9));
  writeFileSync(disk, Buffer.alloc(1 << 20, 8));

  const presented = await provider.present(snap, 'local-proxy');
  const mapped = presented.mapPath(disk);
  t.is(mapped, join(snap.path!, 'vm1', 'disk.vhdx'));
  t.deepEqual(readFileSync(mapped), Buffer.alloc(1 << 20, 7));
  t.throws(() => presented.mapPath('/etc/passwd'), { message: /is not on volume "vms"/ });
  t.throws(() => writeFileSync(mapped, 'x'), { code: 'EROFS' });

  // a second snapshot of the same volume in the same job gets its own name
  const snap2 = await provider.create(volume, { jobId: 'job-42' });
  t.not(snap2.id, snap.id);
  // the second snapshot does not contain the first (the snapshot directory is a nested subvolume)
  t.deepEqual(readdirSync(join(snap2.path!, '.stillpoint-snapshots')), []);

  const listed = await provider.list(volume);
  t.deepEqual(listed.map((s) => s.id).sort(), [snap.id, snap2.id].sort());
  t.is(listed.find((s) => s.id === snap.id)!.createdAt, snap.createdAt);
  // list() without a volume finds them through the state file (as reconcile after a crash would)
  const fresh = new BtrfsSnapshotProvider({ stateFile: join(state, 'volumes.json') });
  t.deepEqual((await fresh.list()).map((s) => s.id).sort(), [snap.id, snap2.id].sort());

  await presented.unpresent();
  t.throws(() => presented.mapPath(disk), { message: /no longer presented/ });
  await provider.delete(snap);
  t.false(existsSync(snap.path!));
  await provider.delete(snap); // already gone: not an error
  await fresh.delete(snap2);
  t.deepEqual(await provider.list(volume), []);
  t.deepEqual(readdirSync(join(vol, '.stillpoint-snapshots')), []);
});

/** The volume names the provider remembers in `stateFile` (one file per volume in `<stateFile>.d`). */
function remembered(stateFile: string): string[] {
  return readdirSync(`${stateFile}.d`).filter((n) => n.endsWith('.json')).map((n) => (JSON.parse(readFileSync(join(`${stateFile}.d`, n), 'utf8')) as { name: string }).name).sort();
}

btrfsTest('snapshots of several volumes taken at once are all remembered in the state file', async (t) => {
  const state = await mkdtemp(join(tmpdir(), 'stillpoint-btrfs-state-'));
  t.teardown(() => rm(state, { recursive: true, force: true }));
  const stateFile = join(state, 'volumes.json');
  const provider = new BtrfsSnapshotProvider({ stateFile });
  const volumes = ['c1', 'c2', 'c3', 'c4'].map((name) => ({ name, path: fs.subvolume(name) }));
  const snaps = await Promise.all(volumes.map((v) => provider.create(v, { jobId: 'at-once' })));
  t.deepEqual(remembered(stateFile), ['c1', 'c2', 'c3', 'c4']);
  const fresh = new BtrfsSnapshotProvider({ stateFile });
  t.deepEqual((await fresh.list()).map((s) => s.id).sort(), snaps.map((s) => s.id).sort());
  for (const s of snaps) await provider.delete(s);
});

btrfsTest('processes sharing one state directory all remember their volumes; the single state file of earlier versions is still read', async (t) => {
  const state = await mkdtemp(join(tmpdir(), 'stillpoint-btrfs-state-'));
  t.teardown(() => rm(state, { recursive: true, force: true }));
  const stateFile = join(state, 'volumes.json');
  // Three processes, each snapshotting its own four volumes at once, all at the same time.
  const names = [0, 1, 2].map((p) => [0, 1, 2, 3].map((v) => `p${p}v${v}`));
  const paths = new Map(names.flat().map((n) => [n, fs.subvolume(n)]));
  const script = join(state, 'snap.mts');
  writeFileSync(script, `
    import { BtrfsSnapshotProvider } from ${JSON.stringify(new URL('../../plugins/btrfs/provider.ts', import.meta.url).href)};
    const [stateFile, ...volumes] = process.argv.slice(2);
    const provider = new BtrfsSnapshotProvider({ stateFile });
    await Promise.all(volumes.map((v) => { const [name, path] = v.split('=', 2); return provider.create({ name, path }, { jobId: 'many' }); }));
  `);
  const { execFile } = await import('node:child_process');
  const run = (args: string[]) => new Promise<void>((resolve, reject) => execFile(process.execPath, ['--import', 'tsx', script, stateFile, ...args], (error, _out, err) => (error ? reject(new Error(`${error.message}\n${err}`)) : resolve())));
  await Promise.all(names.map((group) => run(group.map((n) => `${n}=${paths.get(n)}`))));
  t.deepEqual(remembered(stateFile), names.flat().sort());

  // A volume only the old single file names is found too.
  const legacy = fs.subvolume('legacy');
  const provider = new BtrfsSnapshotProvider();
  const old = await provider.create({ name: 'legacy', path: legacy }, { jobId: 'old' });
  writeFileSync(stateFile, JSON.stringify({ volumes: [{ name: 'legacy', path: legacy }] }));
  const fresh = new BtrfsSnapshotProvider({ stateFile });
  const listed = await fresh.list();
  t.is(listed.length, 13);
  t.true(listed.some((s) => s.id === old.id));
  for (const s of listed) await fresh.delete(s);
});

btrfsTest('an absolute snapshot directory, proxy roots, and refusal to touch what is not a Stillpoint snapshot', async (t) => {
  const dir = join(fs.mount, 'snapdir');
  const provider = new BtrfsSnapshotProvider({ snapshotDir: dir, proxyRoots: { remote: '/mnt/host1' } });
  const a = fs.subvolume('a');
  const b = fs.subvolume('b');
  writeFileSync(join(a, 'x.vhdx'), 'a');
  const sa = await provider.create({ name: 'a', path: a }, { jobId: 'j1' });
  const sb = await provider.create({ name: 'b', path: b }, { jobId: 'j1' });
  t.true(sa.id.startsWith(dir + '/'));
  t.deepEqual((await provider.list({ name: 'a', path: a })).map((s) => s.id), [sa.id], 'a shared directory is filtered by volume');
  const presented = await provider.present(sa, 'remote');
  t.is(presented.mapPath(join(a, 'x.vhdx')), join('/mnt/host1', sa.path!, 'x.vhdx'));

  await t.throwsAsync(provider.delete({ ...sa, id: a, path: a }), { message: /not the path of a Stillpoint btrfs snapshot/ });
  t.true(existsSync(a));
  await provider.delete(sa);
  await provider.delete(sb);
  await t.throwsAsync(provider.present(sa, 'remote'), { message: /does not exist/ });
  t.deepEqual(readdirSync(dir), []);
});

btrfsTest('the plugin taps resolveSnapshotProvider for btrfs subvolumes only', async (t) => {
  const state = await mkdtemp(join(tmpdir(), 'stillpoint-btrfs-state-'));
  t.teardown(() => rm(state, { recursive: true, force: true }));
  const engine = new Engine();
  const plugin = btrfsPlugin(btrfsPlugin.optionsSchema.parse({}), { configDir: state, stateDir: state });
  await plugin.apply(engine);
  const vol = fs.subvolume('hooked');
  mkdirSync(join(vol, 'sub'));
  t.is(engine.hooks.resolveSnapshotProvider.call({ name: 'hooked', path: vol })?.name, 'btrfs');
  t.is(engine.hooks.resolveSnapshotProvider.call({ name: 'sub', path: join(vol, 'sub') }), undefined);
  t.is(engine.hooks.resolveSnapshotProvider.call({ name: 'tmp', path: tmpdir() }), undefined);
  t.throws(() => btrfsPlugin.optionsSchema.parse({ snapshotdir: '/x' }), { message: /snapshotdir/ });
});
