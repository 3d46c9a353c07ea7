import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { storageTargetKit } from '../../core/testing/storage-kit.ts';
import { StillpointError } from '../../core/errors.ts';
import { canMount, fillUp, mountTmpfs } from '../../test/repository/tmpfs.ts';
import { LocalStorage } from './storage.ts';
import localPlugin from './index.ts';
import { Engine } from '../../core/engine/engine.ts';

if (!canMount && process.env.CI === 'true') throw new Error('the local storage tests need root (to mount a small tmpfs) under CI');

storageTargetKit(test, {
  name: 'local',
  async setup() {
    if (!canMount) {
      const dir = await mkdtemp(join(tmpdir(), 'stillpoint-local-'));
      return { target: new LocalStorage(join(dir, 'repo')), teardown: () => rm(dir, { recursive: true, force: true }) };
    }
    // A small real filesystem, so that a put can fail for real (ENOSPC) in the middle.
    const fs = mountTmpfs(24);
    const target = new LocalStorage(join(fs.dir, 'repo'));
    return {
      target,
      async interruptedPut(key, data) {
        const undo = fillUp(fs.dir, 1024 * 1024);
        try {
          await target.put(key, data);
          return null;
        } catch (error) {
          return error;
        } finally {
          undo();
        }
      },
      async teardown() {
        fs.unmount();
      },
    };
  },
});

test('local: files are created 0600 and directories 0700', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-local-'));
  try {
    const target = new LocalStorage(join(dir, 'repo'));
    await target.put('keys/abc', Buffer.from('secret'));
    t.is((await stat(join(dir, 'repo', 'keys', 'abc'))).mode & 0o777, 0o600);
    t.is((await stat(join(dir, 'repo', 'keys'))).mode & 0o777, 0o700);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('local: a full filesystem fails with a clear error', async (t) => {
  if (!canMount) {
    t.log('needs root to mount a tmpfs; skipped');
    t.pass();
    return;
  }
  const fs = mountTmpfs(4);
  try {
    const target = new LocalStorage(join(fs.dir, 'repo'));
    const error = await t.throwsAsync(() => target.put('big', Buffer.alloc(8 * 2 ** 20, 1)), { instanceOf: StillpointError });
    t.regex(error!.message, /storage target is full \(ENOSPC\)/);
    t.regex(error!.message, /prune old restore points/);
    t.is(await target.head('big'), null);
  } finally {
    fs.unmount();
  }
});

test('local: permission denied names the path', async (t) => {
  if (!canMount) {
    t.log('needs root to mount a read-only filesystem; skipped');
    t.pass();
    return;
  }
  const fs = mountTmpfs(1);
  try {
    const { execFileSync } = await import('node:child_process');
    execFileSync('mount', ['-o', 'remount,ro', fs.dir]);
    const target = new LocalStorage(join(fs.dir, 'repo'));
    const error = await t.throwsAsync(() => target.put('x', Buffer.from('x')), { instanceOf: StillpointError });
    t.regex(error!.message, /EROFS|permission denied/);
    t.true(error!.message.includes(fs.dir));
  } finally {
    fs.unmount();
  }
});

test('local plugin: serves storage type "local", relative paths against the config directory', (t) => {
  const engine = new Engine();
  localPlugin({}, { configDir: '/etc/stillpoint', stateDir: '/var/lib/stillpoint' }).apply(engine);
  const target = engine.hooks.resolveStorage.call({ type: 'local', options: { path: 'repo' } });
  t.true(target instanceof LocalStorage);
  t.is((target as LocalStorage).root, '/etc/stillpoint/repo');
  t.is(engine.hooks.resolveStorage.call({ type: 's3', options: {} }), undefined);
  t.throws(() => engine.hooks.resolveStorage.call({ type: 'local', options: {} }), { message: /repository\.storage\.options\.path/ });
});
