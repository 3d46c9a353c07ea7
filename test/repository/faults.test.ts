import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { StorageTarget } from '../../core/contracts/storage.ts';
import { StillpointError, TransientError } from '../../core/errors.ts';
import { openRepository, RawFileDisk, repositoryConfigSchema, withRetry } from '../../core/repository/index.ts';
import { LocalStorage } from '../../plugins/local/storage.ts';
import { meta, MiB, writeImage } from './helpers.ts';
import { canMount, mountTmpfs } from './tmpfs.ts';

const config = repositoryConfigSchema.parse({ storage: { type: 'local', options: {} }, chunkSize: 256 * 1024 });

test('a full repository filesystem (ENOSPC) fails the backup with a clear error and leaves no restore point', async (t) => {
  if (!canMount) {
    if (process.env.CI === 'true') t.fail('needs root to mount a tmpfs');
    else t.log('needs root to mount a tmpfs; skipped');
    t.pass();
    return;
  }
  const fs = mountTmpfs(6);
  const work = await mkdtemp(join(tmpdir(), 'stillpoint-faults-'));
  try {
    const storage = new LocalStorage(join(fs.dir, 'repo'));
    // Packs of 1 MiB: some are stored before the filesystem is full.
    const repo = await openRepository(storage, config, { create: true, workers: 1, packSize: MiB });
    const img = await writeImage(work, 'big.img', randomBytes(12 * MiB));
    const writer = await repo.startRestorePoint(meta());
    const source = await RawFileDisk.open(img);
    const error = await t.throwsAsync(() => writer.storeDisk({ id: 'scsi0-0', virtualSize: 12 * MiB, logicalSectorSize: 512 }, source, {}), { instanceOf: StillpointError });
    await source.close();
    t.regex(error!.message, /storage target is full \(ENOSPC\).*prune old restore points/s);
    await writer.abort();
    t.deepEqual(await repo.list(), [], 'no restore point');
    t.is(await storage.head('locks/writer'), null, 'the lock is released');
    // After freeing space (gc of the orphaned chunks), a smaller backup works.
    const gc = await repo.gc();
    t.true(gc.deletedChunks > 0, 'gc removes the chunks of the failed backup');
    const small = await writeImage(work, 'small.img', randomBytes(2 * MiB));
    const w2 = await repo.startRestorePoint(meta());
    const s2 = await RawFileDisk.open(small);
    await w2.storeDisk({ id: 'scsi0-0', virtualSize: 2 * MiB, logicalSectorSize: 512 }, s2, {});
    await s2.close();
    await w2.commit();
    t.is((await repo.list()).length, 1);
    await repo.close();
  } finally {
    fs.unmount();
    await rm(work, { recursive: true, force: true });
  }
});

test('transient errors are retried with backoff; other errors are not', async (t) => {
  let calls = 0;
  const result = await withRetry('op', async () => {
    if (++calls < 3) throw new TransientError('connection dropped');
    return 'done';
  }, { retries: 5, baseDelayMs: 1, maxDelayMs: 5 });
  t.is(result, 'done');
  t.is(calls, 3);
  calls = 0;
  await t.throwsAsync(() => withRetry('op', async () => {
    calls++;
    throw new StillpointError('EIO');
  }, { retries: 5, baseDelayMs: 1, maxDelayMs: 5 }), { message: 'EIO' });
  t.is(calls, 1);
  calls = 0;
  await t.throwsAsync(() => withRetry('op', async () => {
    calls++;
    throw new TransientError('still down');
  }, { retries: 2, baseDelayMs: 1, maxDelayMs: 5 }), { instanceOf: TransientError });
  t.is(calls, 3);
});

test('a backup through a storage target whose connection drops now and then completes and restores', async (t) => {
  // A real local target behind a real fault: every 7th operation fails as a dropped connection.
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-flaky-'));
  try {
    const inner = new LocalStorage(join(dir, 'repo'));
    let n = 0;
    let faults = 0;
    const drops = () => ++n % 7 === 0 && ++faults > 0;
    const flaky: StorageTarget = {
      name: 'flaky',
      put: (k, d) => (drops() ? Promise.reject(new TransientError('connection reset')) : inner.put(k, d)),
      get: (k) => (drops() ? Promise.reject(new TransientError('connection reset')) : inner.get(k)),
      head: (k) => (drops() ? Promise.reject(new TransientError('timeout')) : inner.head(k)),
      list: (p) => inner.list(p),
      delete: (k) => inner.delete(k),
    };
    const repo = await openRepository(flaky, config, { create: true, workers: 1, retry: { retries: 4, baseDelayMs: 1, maxDelayMs: 5 } });
    const data = randomBytes(3 * MiB);
    const img = await writeImage(dir, 'd.img', data);
    const writer = await repo.startRestorePoint(meta());
    const src = await RawFileDisk.open(img);
    await writer.storeDisk({ id: 'd', virtualSize: data.length, logicalSectorSize: 512 }, src, {});
    await src.close();
    const { id } = await writer.commit();
    await repo.restoreDisk(id, 'd', join(dir, 'out.img'));
    const { readFile } = await import('node:fs/promises');
    t.true((await readFile(join(dir, 'out.img'))).equals(data));
    t.log(`${n} storage operations, ${faults} of them dropped and retried`);
    t.true(faults >= 2);
    await repo.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
