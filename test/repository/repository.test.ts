import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import test from 'ava';
import { RawFileDisk } from '../../core/repository/index.ts';
import { ConfigError, CorruptImageError, NotFoundError, StillpointError } from '../../core/errors.ts';
import { backup, fixture, meta, MiB, mixedImage, scatterChanges, writeImage } from './helpers.ts';

test('full backup, incremental with changed ranges, hash-skipping full read: each restore point restores whole', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const v1 = mixedImage(8 * MiB + 4096);
    const img = await writeImage(f.dir, 'disk.img', v1);
    const b1 = await backup(repo, img, { time: new Date('2026-01-01T00:00:00Z') });
    t.true(b1.result.fullRead);
    t.regex(b1.result.reason!, /no previous restore point/);
    t.is(b1.result.bytesRead, v1.length);
    t.true(b1.result.bytesStored < v1.length * 0.7, 'zeros are not stored and text compresses');

    const v2 = Buffer.from(v1);
    const changed = scatterChanges(v2, 5, 10_000);
    await writeFile(img, v2);
    const b2 = await backup(repo, img, { time: new Date('2026-01-02T00:00:00Z'), changed });
    t.false(b2.result.fullRead);
    t.regex(b2.result.reason!, new RegExp(`incremental: \\d+ changed range\\(s\\).*since restore point ${b1.id}`));
    t.true(b2.result.bytesRead <= 5 * 2 * 64 * 1024, `only changed chunks are read (${b2.result.bytesRead})`);

    const v3 = Buffer.from(v2);
    scatterChanges(v3, 3, 5000, 99);
    await writeFile(img, v3);
    const b3 = await backup(repo, img, { time: new Date('2026-01-03T00:00:00Z'), changed: null });
    t.true(b3.result.fullRead);
    t.regex(b3.result.reason!, /change tracking was reset/);
    t.true(b3.result.bytesStored < 3 * 2 * 70 * 1024 + 4096, `unchanged chunks skipped by hash (${b3.result.bytesStored} stored)`);
    // Chunks that hash to what their place held before are named only, not compressed and encrypted
    // again: every data chunk but the changed ones (zero chunks are neither).
    const chunk = 64 * 1024;
    const dataBytes = (image: Buffer, skip: (start: number, end: number) => boolean = () => false) => {
      let n = 0;
      for (let start = 0; start < image.length; start += chunk) {
        const end = Math.min(image.length, start + chunk);
        if (image.subarray(start, end).some((b) => b !== 0) && !skip(start, end)) n += end - start;
      }
      return n;
    };
    const changedSinceB2 = (start: number, end: number) => !v3.subarray(start, end).equals(v2.subarray(start, end));
    t.is(b3.result.bytesUnchanged, dataBytes(v3, changedSinceB2));
    t.true(b3.result.bytesUnchanged < dataBytes(v3), 'the changed chunks were sealed');

    const b4 = await backup(repo, img, { time: new Date('2026-01-04T00:00:00Z') });
    t.regex(b4.result.reason!, /no change tracking/);
    t.is(b4.result.bytesUnchanged, dataBytes(v3), 'nothing changed: every data chunk is only named');
    t.is(b2.result.bytesUnchanged, 0, 'every chunk in the changed ranges did change');

    for (const [id, expected] of [[b1.id, v1], [b2.id, v2], [b3.id, v3], [b4.id, v3]] as const) {
      const out = join(f.dir, `restore-${id}.img`);
      const progress: number[] = [];
      await repo.restoreDisk(id, 'scsi0-0', out, { onProgress: (p) => progress.push(p.bytesDone) });
      t.true((await readFile(out)).equals(expected), `restore point ${id} restores its own content`);
      t.is(progress.at(-1), expected.length);
    }
    const list = await repo.list({ vm: 'vm-1' });
    t.deepEqual(list.map((s) => s.id), [b1.id, b2.id, b3.id, b4.id]);
    t.is((await repo.latest('vm-1'))!.id, b4.id);
    t.is((await repo.manifest(b2.id)).previous, b1.id);
    t.deepEqual((await repo.manifest(b1.id)).vm.configuration, { generation: 2, memoryMiB: 1024 });
    t.is((await repo.manifest(b1.id)).consistency.method, 'online');
    t.true((await repo.verify({ deep: true })).ok);
  } finally {
    await f.cleanup();
  }
});

test('zero extents are recorded, not stored; the reader allocation is honoured', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const data = Buffer.alloc(4 * MiB);
    data.fill(7, MiB, 2 * MiB);
    const img = await writeImage(f.dir, 'sparse.img', data);
    const writer = await repo.startRestorePoint(meta());
    // The reader says only [1 MiB, 2 MiB) holds data: nothing else may be read.
    const source = await RawFileDisk.open(img, { extents: [
      { offset: 0, length: MiB, kind: 'zero' },
      { offset: MiB, length: MiB, kind: 'data' },
      { offset: 2 * MiB, length: 2 * MiB, kind: 'zero' },
    ] });
    const r = await writer.storeDisk({ id: 'd', virtualSize: data.length, logicalSectorSize: 4096 }, source, {});
    await source.close();
    t.is(r.bytesRead, MiB);
    const { id } = await writer.commit();
    const m = await repo.manifest(id);
    t.is(m.disks[0].dataChunks, 16);
    t.is(m.disks[0].zeroChunks, 48);
    t.is(m.disks[0].logicalSectorSize, 4096);
    let chunks = 0;
    for (const entries of repo.data.packIndex.packs.values()) chunks += entries.length;
    t.is(chunks, 1, 'sixteen identical chunks are stored once');
    const out = join(f.dir, 'out.img');
    await repo.restoreDisk(id, 'd', out);
    t.true((await readFile(out)).equals(data));
    t.true((await stat(out)).blocks * 512 <= 2 * MiB, 'zero chunks stay holes in the restored image');
  } finally {
    await f.cleanup();
  }
});

test('a raw image\'s holes are zero extents: not read, not stored, holes again when restored', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    // 16 MiB with data at 3..4 MiB and 10..11 MiB, holes elsewhere (on a disk-backed filesystem).
    const { mkdtemp, open, rm } = await import('node:fs/promises');
    const dir = await mkdtemp('/var/tmp/stillpoint-sparse-');
    try {
      const img = join(dir, 'sparse.img');
      const fh = await open(img, 'w');
      await fh.truncate(16 * MiB);
      const a = Buffer.alloc(MiB, 1);
      const b = mixedImage(MiB);
      await fh.write(a, 0, MiB, 3 * MiB);
      await fh.write(b, 0, MiB, 10 * MiB);
      await fh.close();
      const source = await RawFileDisk.open(img);
      const allocation = await source.allocation();
      await source.close();
      const data = allocation.filter((e) => e.kind === 'data').reduce((n, e) => n + e.length, 0);
      if (data === 16 * MiB) {
        // Only where the native library or hole support is missing.
        if (process.env.CI === 'true') t.fail('holes of a raw image on /var/tmp are not seen');
        t.log('this filesystem (or build) does not report holes; skipped');
        t.pass();
        return;
      }
      t.true(data >= 2 * MiB && data < 4 * MiB, `${data} bytes of data extents`);
      const { id, result } = await backup(repo, img);
      t.true(result.bytesRead < 4 * MiB, `read ${result.bytesRead} bytes of 16 MiB`);
      const out = join(f.dir, 'out.img');
      await repo.restoreDisk(id, 'scsi0-0', out);
      const want = Buffer.alloc(16 * MiB);
      a.copy(want, 3 * MiB);
      b.copy(want, 10 * MiB);
      t.true((await readFile(out)).equals(want));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  } finally {
    await f.cleanup();
  }
});

test('an incremental where a changed range became a hole records zeros there, not the previous data', async (t) => {
  const f = await fixture();
  const { mkdtemp, open, rm } = await import('node:fs/promises');
  const dir = await mkdtemp('/var/tmp/stillpoint-sparse-');
  try {
    const repo = await f.open();
    const a = mixedImage(MiB);
    const b = Buffer.from(mixedImage(2 * MiB).subarray(MiB).map((x) => x ^ 0x5a));
    /** 16 MiB, holes except where `regions` put data. */
    const sparse = async (name: string, regions: Array<[number, Buffer]>) => {
      const path = join(dir, name);
      const fh = await open(path, 'w');
      await fh.truncate(16 * MiB);
      for (const [at, data] of regions) await fh.write(data, 0, data.length, at);
      await fh.close();
      return path;
    };
    const v1 = await sparse('v1.img', [[3 * MiB, a], [10 * MiB, b]]);
    const probe = await RawFileDisk.open(v1);
    const data = (await probe.allocation()).filter((e) => e.kind === 'data').reduce((n, e) => n + e.length, 0);
    await probe.close();
    if (data === 16 * MiB) {
      if (process.env.CI === 'true') t.fail('holes of a raw image on /var/tmp are not seen');
      t.log('this filesystem (or build) does not report holes; skipped');
      t.pass();
      return;
    }
    await backup(repo, v1, { time: new Date('2026-01-01T00:00:00Z') });
    // 3..4 MiB was trimmed (a hole now), and the change tracking says so.
    const v2 = await sparse('v2.img', [[10 * MiB, b]]);
    const b2 = await backup(repo, v2, { time: new Date('2026-01-02T00:00:00Z'), changed: [{ offset: 3 * MiB, length: MiB }] });
    t.false(b2.result.fullRead);
    t.is(b2.result.bytesRead, 0, 'a hole is not read');
    const out = join(f.dir, 'out.img');
    await repo.restoreDisk(b2.id, 'scsi0-0', out);
    const want = Buffer.alloc(16 * MiB);
    b.copy(want, 10 * MiB);
    t.true((await readFile(out)).equals(want), 'the trimmed range restores as zeros, the rest as before');
  } finally {
    await rm(dir, { recursive: true, force: true });
    await f.cleanup();
  }
});

test('restore a byte range to a stream and all disks of a VM into a folder', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const a = mixedImage(3 * MiB + 512);
    const b = mixedImage(MiB);
    const writer = await repo.startRestorePoint(meta('vm-2'));
    for (const [diskId, data] of [['scsi0-0', a], ['scsi0-1', b]] as const) {
      const src = await RawFileDisk.open(await writeImage(f.dir, `${diskId}.img`, data));
      await writer.storeDisk({ id: diskId, virtualSize: data.length, logicalSectorSize: 512 }, src, {});
      await src.close();
    }
    const { id } = await writer.commit();

    const out = new PassThrough({ highWaterMark: 1024 });
    const parts: Buffer[] = [];
    out.on('data', (c: Buffer) => parts.push(c));
    const r = await repo.restoreRange('latest', 'scsi0-0', { offset: 100_000, length: 2 * MiB }, out, { vm: 'vm-2' });
    t.is(r.bytes, 2 * MiB);
    t.true(Buffer.concat(parts).equals(a.subarray(100_000, 100_000 + 2 * MiB)));

    const folder = join(f.dir, 'vm-2-restore');
    const files = await repo.restoreVm(id, folder);
    t.deepEqual(files.map((x) => x.disk), ['scsi0-0', 'scsi0-1']);
    t.true((await readFile(join(folder, 'scsi0-0.img'))).equals(a));
    t.true((await readFile(join(folder, 'scsi0-1.img'))).equals(b));
    await t.throwsAsync(() => repo.restoreDisk(id, 'scsi0-0', join(folder, 'scsi0-0.img')), { message: /target file exists/ });
    await t.throwsAsync(() => repo.restoreDisk(id, 'nope', join(folder, 'x.img')), { instanceOf: NotFoundError, message: /has no disk "nope".*scsi0-0, scsi0-1/ });
    await t.throwsAsync(() => repo.restoreDisk('19990101', 'scsi0-0', join(folder, 'x.img')), { instanceOf: NotFoundError });
  } finally {
    await f.cleanup();
  }
});

test('encryption: names and contents reveal nothing, the key file is 0600, a wrong passphrase is refused', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open({ passphrase: 'correct horse' });
    const data = Buffer.alloc(MiB, 'PLAINTEXT-MARKER ');
    const img = await writeImage(f.dir, 'd.img', data);
    const { id } = await backup(repo, img);
    for await (const key of f.storage.list('')) {
      const blob = await f.storage.get(key);
      t.false(blob.includes('PLAINTEXT-MARKER'), `${key} holds no plaintext`);
      if (key.startsWith('keys/')) t.is((await stat(join(f.dir, 'repo', key))).mode & 0o777, 0o600);
    }
    const stored = JSON.parse((await f.storage.get('config')).toString());
    t.is(stored.chunkHash, 'blake3-keyed');
    t.is(stored.version, 3);
    await t.throwsAsync(() => f.open({ passphrase: 'wrong' }), { instanceOf: ConfigError, message: /passphrase does not open/ });
    await t.throwsAsync(() => f.open({ passphrase: undefined, create: false }), { instanceOf: ConfigError, message: /encrypted/ });
    const again = await f.open({ passphrase: 'correct horse' });
    const out = join(f.dir, 'r.img');
    await again.restoreDisk(id, 'scsi0-0', out);
    t.true((await readFile(out)).equals(data));
    // The passphrase from an environment variable or a file, as the config asks.
    const { openRepository, repositoryConfigSchema } = await import('../../core/repository/index.ts');
    const cfg = (encryption: object) => repositoryConfigSchema.parse({ storage: { type: 'local', options: {} }, encryption });
    const viaEnv = await openRepository(f.storage, cfg({ passphraseEnv: 'SP_PASS' }), { env: { SP_PASS: 'correct horse' }, workers: 1 });
    t.is((await viaEnv.list()).length, 1);
    await viaEnv.close();
    await writeFile(join(f.dir, 'pass.txt'), 'correct horse\n', { mode: 0o600 });
    const viaFile = await openRepository(f.storage, cfg({ passphraseFile: 'pass.txt' }), { configDir: f.dir, workers: 1 });
    t.is((await viaFile.list()).length, 1);
    await viaFile.close();
    await t.throwsAsync(() => openRepository(f.storage, cfg({ passphraseEnv: 'SP_PASS' }), { env: {} }), { instanceOf: ConfigError, message: /set the environment variable SP_PASS/ });
    // A damaged key file is named.
    const [keyName] = (await readdir(join(f.dir, 'repo', 'keys')));
    await writeFile(join(f.dir, 'repo', 'keys', keyName), '{"format": "stillpoint-key", trunc');
    await t.throwsAsync(() => f.open({ passphrase: 'correct horse' }), { instanceOf: CorruptImageError, message: new RegExp(`keys/${keyName}: the key file is not JSON`) });
  } finally {
    await f.cleanup();
  }
});

test('chunk names: BLAKE3 by default, SHA-256 when the config asks (format version 2, as before BLAKE3); each repository keeps its own hash through incrementals, restore and a deep verify', async (t) => {
  const cases = [
    { chunkHash: 'sha256', passphrase: 'pw', stored: 'hmac-sha256', version: 2 },
    { chunkHash: 'sha256', passphrase: undefined, stored: 'sha256', version: 2 },
    { chunkHash: 'blake3', passphrase: undefined, stored: 'blake3', version: 3 },
    { chunkHash: 'blake3', passphrase: 'pw', stored: 'blake3-keyed', version: 3 },
  ] as const;
  for (const c of cases) {
    const f = await fixture();
    try {
      const repo = await f.open({ passphrase: c.passphrase, chunkHash: c.chunkHash });
      const config = JSON.parse((await f.storage.get('config')).toString());
      t.like(config, { chunkHash: c.stored, version: c.version }, `${c.chunkHash}, passphrase: ${!!c.passphrase}`);
      const v1 = mixedImage(2 * MiB);
      const img = await writeImage(f.dir, 'disk.img', v1);
      const b1 = await backup(repo, img, { time: new Date('2026-01-01T00:00:00Z') });
      await repo.close();
      // Opened again with the other hash in the config: the repository's own hash stays.
      const again = await f.open({ passphrase: c.passphrase, chunkHash: c.chunkHash === 'sha256' ? 'blake3' : 'sha256' });
      const v2 = Buffer.from(v1);
      const changed = scatterChanges(v2, 3, 10_000);
      await writeFile(img, v2);
      const b2 = await backup(again, img, { time: new Date('2026-01-02T00:00:00Z'), changed });
      t.true(b2.result.bytesStored < 3 * 2 * 70 * 1024, 'unchanged chunks are not stored again');
      const chunk = v1.subarray(0, 64 * 1024);
      const named = again.data.nameChunk(chunk);
      t.is(again.data.config.chunkHash, c.stored);
      await again.data.packIndex.sync();
      t.not(again.data.packIndex.get(named), undefined, `the first chunk is stored under its ${c.stored} name`);
      for (const [id, image] of [[b1.id, v1], [b2.id, v2]] as const) {
        const out = join(f.dir, `${id}.img`);
        await again.restoreDisk(id, 'scsi0-0', out);
        t.true((await readFile(out)).equals(image), `${c.stored}: restore point ${id} restores`);
      }
      const report = await again.verify({ deep: true });
      t.true(report.ok, JSON.stringify(report));
      t.is(report.chunksChecked, report.chunksReferenced);
      await again.close();
      // A config whose hash does not fit its encryption is refused.
      await f.storage.put('config', Buffer.from(JSON.stringify({ ...config, chunkHash: c.passphrase ? 'blake3' : 'blake3-keyed' })));
      await t.throwsAsync(() => f.open({ passphrase: c.passphrase }), { instanceOf: CorruptImageError, message: /config is not valid: chunkHash/ });
    } finally {
      await f.cleanup();
    }
  }
});

test('a backup process joins the writer lock while the repository opens: held before any restore point, kept by the first one, let go by commit or close', async (t) => {
  const f = await fixture();
  try {
    await (await f.open({ passphrase: 'pw' })).close(); // created (no lock while creating)
    t.is(await f.storage.head('locks/writer'), null);
    const repo = await f.open({ passphrase: 'pw', writer: 'backup' });
    t.not(await f.storage.head('locks/writer'), null, 'held once open, before any restore point');
    const other = await f.open({ passphrase: 'pw' });
    await t.throwsAsync(() => other.startRestorePoint(meta('vm-other')), { message: /locked by backup.*pid/ }, 'another process is refused meanwhile');
    const w = await repo.startRestorePoint(meta());
    t.is(repo.writerLock.writers, 1, 'the restore point holds it; the early join is let go');
    await w.commit();
    t.is(await f.storage.head('locks/writer'), null, 'commit releases it');
    // Opened for writing but closed without a restore point: let go too.
    const idle = await f.open({ passphrase: 'pw', writer: 'backup' });
    t.not(await f.storage.head('locks/writer'), null);
    await idle.close();
    t.is(await f.storage.head('locks/writer'), null, 'close releases it');
    // A wrong passphrase: nothing held afterwards.
    await t.throwsAsync(() => f.open({ passphrase: 'wrong', writer: 'backup' }), { message: /passphrase does not open/ });
    t.is(await f.storage.head('locks/writer'), null, 'a failed open leaves no lock');
  } finally {
    await f.cleanup();
  }
});

test('one writing process (Repository) at a time; a stale lock (dead owner) is taken over; abort leaves no restore point', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const img = await writeImage(f.dir, 'd.img', mixedImage(MiB));
    const w1 = await repo.startRestorePoint(meta());
    const other = await f.open();
    await t.throwsAsync(() => other.startRestorePoint(meta('vm-other')), { message: /locked by backup of VM VM vm-1.*pid/ }, 'another writer (Repository) is refused');
    const src = await RawFileDisk.open(img);
    await w1.storeDisk({ id: 'd', virtualSize: MiB, logicalSectorSize: 512 }, src, {});
    await src.close();
    await w1.abort();
    t.deepEqual(await repo.list(), [], 'an aborted restore point does not exist');
    await t.throwsAsync(() => w1.commit(), { message: /already aborted/ });

    // A lock left by a process that died.
    const lock = { format: 'stillpoint-lock', host: (await import('node:os')).hostname(), pid: 2 ** 22 + 17, session: 'dead', purpose: 'backup of VM x', acquiredAt: new Date().toISOString(), heartbeatAt: new Date().toISOString() };
    await f.storage.put('locks/writer', Buffer.from(JSON.stringify(lock)));
    const w2 = await repo.startRestorePoint(meta());
    await w2.commit();
    t.is((await repo.list()).length, 1);
    t.is(await f.storage.head('locks/writer'), null, 'commit releases the lock');
  } finally {
    await f.cleanup();
  }
});

test('verify: quick finds a missing pack, deep a corrupted chunk in a pack; both name the restore point, chunk and pack; restore names them too', async (t) => {
  const f = await fixture();
  try {
    // Small packs (a few chunks each), so that one pack can be damaged and another removed.
    const repo = await f.open({ packSize: 256 * 1024 });
    const img = await writeImage(f.dir, 'd.img', mixedImage(2 * MiB));
    const b1 = await backup(repo, img, { time: new Date('2026-02-01T00:00:00Z') });
    const b2 = await backup(repo, img, { time: new Date('2026-02-02T00:00:00Z') });
    const ok = await repo.verify();
    t.true(ok.ok);
    t.is(ok.mode, 'quick');
    const m = await repo.manifest(b1.id);
    const packs = [...repo.data.packIndex.packs].sort(([x], [y]) => x.localeCompare(y));
    t.true(packs.length >= 3, `several packs (${packs.length})`);
    // Corrupt one chunk inside a pack on disk (flip a byte of its blob), remove another pack.
    const [victimPack, [victimEntry]] = packs[0];
    const victim = victimEntry.id;
    const path = join(f.dir, 'repo', 'packs', victimPack.slice(0, 2), victimPack);
    const blob = await readFile(path);
    blob[victimEntry.offset + victimEntry.length - 3] ^= 0xff;
    await writeFile(path, blob);
    const [gonePack, goneEntries] = packs[1];
    const gone = goneEntries.map((e) => e.id);
    await f.storage.delete(`packs/${gonePack.slice(0, 2)}/${gonePack}`);

    const quick = await repo.verify();
    t.false(quick.ok);
    t.deepEqual(quick.damagedChunks.map((c) => c.chunk).sort(), [...gone].sort());
    t.regex(quick.damagedChunks[0].problem, new RegExp(`missing: its pack packs/../${gonePack} is missing`));
    t.deepEqual(quick.damaged.map((d) => d.id).sort(), [b1.id, b2.id].sort());

    const deep = await repo.verify({ deep: true });
    t.deepEqual(deep.damagedChunks.map((c) => c.chunk).sort(), [...gone, victim].sort());
    const p = deep.damaged[0].problems.find((x) => x.chunk === victim)!;
    t.is(p.disk, 'scsi0-0');
    t.is(typeof p.offset, 'number');
    t.regex(p.problem, new RegExp(`damaged: .*pack packs/../${victimPack}`));
    t.deepEqual(deep.damaged.map((d) => d.id).sort(), [b1.id, b2.id].sort());
    t.is(m.disks[0].chunkCount, 32);

    const sample = await repo.verify({ deep: true, samplePercent: 50 });
    t.is(sample.mode, 'sample');
    t.true(sample.chunksChecked < sample.chunksReferenced);
    const tiny = await repo.verify({ deep: true, samplePercent: 0.001 });
    t.true(tiny.chunksChecked >= 1, 'a sample of a positive share checks at least one chunk');

    const error = await t.throwsAsync(() => repo.restoreDisk(b1.id, 'scsi0-0', join(f.dir, 'r.img')));
    t.true(error instanceof CorruptImageError || error instanceof StillpointError);
    t.true([victim, ...gone].some((c) => error!.message.includes(c)), 'restore names the damaged chunk');
    t.true([victimPack, gonePack].some((pk) => error!.message.includes(pk)), `restore names the pack: ${error!.message}`);
    t.deepEqual((await readdir(f.dir)).filter((n) => n.startsWith('r.img')), [], 'a failed restore leaves no partial file');
  } finally {
    await f.cleanup();
  }
});

test('verify names every restore point whose chunk table cannot be read, also those sharing it', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const img = await writeImage(f.dir, 'd.img', mixedImage(MiB));
    const b1 = await backup(repo, img, { time: new Date('2026-02-01T00:00:00Z') });
    const b2 = await backup(repo, img, { time: new Date('2026-02-02T00:00:00Z') });
    const [table] = (await repo.manifest(b1.id)).disks[0].tablePages!;
    t.deepEqual((await repo.manifest(b2.id)).disks[0].tablePages, [table], 'the same content: one table');
    const key = `tables/${table.slice(0, 2)}/${table}`;
    const bytes = await f.storage.get(key);
    bytes[bytes.length - 5] ^= 0xff;
    await f.storage.put(key, bytes);
    const report = await repo.verify();
    t.false(report.ok);
    t.deepEqual(report.damaged.map((d) => d.id).sort(), [b1.id, b2.id].sort());
    for (const d of report.damaged) t.regex(d.problems[0].problem, /chunk table cannot be read/);
    t.is(report.damaged[0].problems[0].chunk, `table ${table}`);
  } finally {
    await f.cleanup();
  }
});

test('retention and prune per job and VM; gc removes only unreferenced chunks, and defers while a backup runs', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open();
    const images: Buffer[] = [];
    const ids: string[] = [];
    for (let day = 1; day <= 5; day++) {
      const data = mixedImage(MiB);
      images.push(data);
      const img = await writeImage(f.dir, `d${day}.img`, data);
      ids.push((await backup(repo, img, { time: new Date(`2026-03-0${day}T12:00:00Z`) })).id);
    }
    const other = await backup(repo, await writeImage(f.dir, 'o.img', mixedImage(MiB)), { vm: 'vm-9', time: new Date('2026-01-01T00:00:00Z') });

    const dry = await repo.prune({ keepLast: 2 }, { dryRun: true });
    t.deepEqual(dry.removed.map((r) => r.id).sort(), ids.slice(0, 3).sort());
    t.is((await repo.list()).length, 6, 'a dry run removes nothing');
    const pruned = await repo.prune({ keepLast: 2 });
    t.deepEqual(pruned.removed.map((r) => r.id).sort(), ids.slice(0, 3).sort());
    t.true(pruned.kept.some((k) => k.id === other.id), 'another VM keeps its own last restore point');

    // While a backup holds the lock, gc marks but deletes nothing.
    const writer = await repo.startRestorePoint(meta('vm-3'));
    const during = await repo.gc();
    t.true(during.deferred);
    t.true(during.candidates > 0);
    t.regex(during.reason!, /locked by backup/);
    // That backup reuses content of a pruned restore point (dedup by head) and commits.
    const src = await RawFileDisk.open(await writeImage(f.dir, 'reuse.img', images[0]));
    await writer.storeDisk({ id: 'scsi0-0', virtualSize: MiB, logicalSectorSize: 512 }, src, {});
    await src.close();
    await writer.commit();

    const gc = await repo.gc();
    t.false(gc.deferred);
    t.true(gc.deletedChunks > 0);
    t.true((await repo.verify({ deep: true })).ok, 'every remaining restore point is whole after gc');
    for (const s of await repo.list()) {
      const m = await repo.manifest(s.id);
      const out = join(f.dir, `after-gc-${s.id}.img`);
      await repo.restoreDisk(s.id, m.disks[0].id, out);
    }
    const reused = (await repo.list({ vm: 'vm-3' }))[0];
    t.true((await readFile(join(f.dir, `after-gc-${reused.id}.img`))).equals(images[0]), 'the chunks the backup reused survived gc');
    t.is((await repo.gc()).candidates, 0);
  } finally {
    await f.cleanup();
  }
});

test('storeDiskData + addDisk: the data part runs apart from the writer and returns a serialisable record', async (t) => {
  const f = await fixture();
  try {
    const repo = await f.open({ passphrase: 'pw' });
    const img = await writeImage(f.dir, 'd.img', mixedImage(2 * MiB));
    await backup(repo, img);
    const writer = await repo.startRestorePoint(meta());
    // The "proxy": its own repository data handle, opened from storage + config + passphrase.
    const { openRepositoryData, repositoryConfigSchema } = await import('../../core/repository/index.ts');
    const proxy = await openRepositoryData(f.storage, repositoryConfigSchema.parse({ storage: { type: 'local', options: {} } }), { passphrase: 'pw', workers: 1 });
    const src = await RawFileDisk.open(img);
    const record = await proxy.storeDiskData({ id: 'scsi0-0', virtualSize: 2 * MiB, logicalSectorSize: 512 }, src, {
      previous: writer.previousDisk('scsi0-0'),
      changed: [],
    });
    await src.close();
    await proxy.close();
    const wire = JSON.parse(JSON.stringify(record));
    t.is(wire.bytesRead, 0, 'nothing changed, nothing read');
    await writer.addDisk(wire);
    await t.throwsAsync(() => writer.addDisk(wire), { message: /stored twice/ });
    await t.throwsAsync(() => writer.addDisk({ ...wire, id: 'x', tablePages: ['f'.repeat(64)] }), { message: /chunk table of this disk is not in the repository/ });
    const { id } = await writer.commit();
    const out = join(f.dir, 'r.img');
    await repo.restoreDisk(id, 'scsi0-0', out);
    t.true((await readFile(out)).equals(await readFile(img)));
  } finally {
    await f.cleanup();
  }
});

test('opening a storage target without a repository says how to create one', async (t) => {
  const f = await fixture();
  try {
    await t.throwsAsync(() => f.open({ create: false }), { instanceOf: NotFoundError, message: /no Stillpoint repository here.*stillpoint init/ });
  } finally {
    await f.cleanup();
  }
});
