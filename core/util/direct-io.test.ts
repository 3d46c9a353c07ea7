import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { allocAligned, bytesToPage, dataExtents, openDirectFile, RunWriter } from './direct-io.ts';

// A directory on a disk-backed filesystem (the test runner's tmpdir may be a tmpfs).
const base = mkdtempSync('/var/tmp/stillpoint-direct-io-');
test.after.always(() => rmSync(base, { recursive: true, force: true }));

test('direct writes: aligned pieces go around the cache, unaligned ones and tails do not, the bytes are all there', async (t) => {
  const path = join(base, 'mixed');
  const file = await openDirectFile(path, { exclusive: true });
  if (!file) {
    // Under CI the library is built by `npm ci` (prepare): it must be there.
    if (process.env.CI === 'true') t.fail('the native direct-I/O library is not built (npm run build:native)');
    else t.log('the native direct-I/O library is not built (npm run build:native); skipped');
    t.pass();
    return;
  }
  t.log(`direct I/O on ${base}: ${file.direct}`);
  const a = randomBytes(3 * 2 ** 20 + 100); // aligned offset, unaligned length
  const b = randomBytes(5000); // unaligned offset
  const c = randomBytes(9 * 2 ** 20); // more than one scratch buffer
  await file.write(0, a);
  await file.write(7, b);
  await file.write(4 * 2 ** 20, c.subarray(2 ** 20)); // a view into a larger buffer
  await file.truncate(16 * 2 ** 20);
  await file.sync();
  await file.close();
  const want = Buffer.alloc(16 * 2 ** 20);
  a.copy(want, 0);
  b.copy(want, 7);
  c.subarray(2 ** 20).copy(want, 4 * 2 ** 20);
  t.true(readFileSync(path).equals(want));
  t.is(statSync(path).mode & 0o777, 0o600);
});

test('aligned buffers: page-aligned memory (written to the device without a copy); the bytes land as they are', async (t) => {
  const buf = allocAligned(5 * 2 ** 20 + 300);
  t.is(buf.length, 5 * 2 ** 20 + 300);
  const file = await openDirectFile(join(base, 'aligned'), { exclusive: true });
  if (!file) {
    if (process.env.CI === 'true') t.fail('the native direct-I/O library is not built (npm run build:native)');
    t.pass();
    return;
  }
  t.is(bytesToPage(buf), 0);
  t.is(bytesToPage(buf.subarray(1)), 4095);
  randomBytes(buf.length).copy(buf);
  await file.write(4096, buf);
  await file.sync();
  await file.close();
  const got = readFileSync(join(base, 'aligned'));
  t.is(got.length, 4096 + buf.length);
  t.true(got.subarray(4096).equals(buf));
});

test('direct writes: an exclusive create of an existing file fails with EEXIST; errors carry the OS code and the path', async (t) => {
  const path = join(base, 'exists');
  const first = await openDirectFile(path, { exclusive: true });
  if (!first) {
    t.pass();
    return;
  }
  await first.close();
  const error = await t.throwsAsync(() => openDirectFile(path, { exclusive: true }));
  t.is((error as NodeJS.ErrnoException).code, 'EEXIST');
  t.true(error!.message.includes(path));
  // Open, then closed twice: the second close is a no-op, a write after close names the handle.
  const again = (await openDirectFile(path))!;
  await again.close();
  await again.close();
  await t.throwsAsync(() => again.write(0, Buffer.alloc(4096)), { message: /not open/ });
});

test('data extents of a sparse file: the written places, not the holes', async (t) => {
  const path = join(base, 'sparse');
  const { openSync, writeSync, ftruncateSync, closeSync } = await import('node:fs');
  const fd = openSync(path, 'w');
  ftruncateSync(fd, 64 * 2 ** 20);
  writeSync(fd, Buffer.alloc(8192, 1), 0, 8192, 8 * 2 ** 20);
  writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 63 * 2 ** 20);
  closeSync(fd);
  const extents = await dataExtents(path);
  if (!extents) {
    if (process.env.CI === 'true') t.fail('the native direct-I/O library is not built');
    t.pass();
    return;
  }
  const covers = (at: number) => extents.some((e) => e.offset <= at && at < e.offset + e.length);
  t.true(covers(8 * 2 ** 20) && covers(8 * 2 ** 20 + 8191) && covers(63 * 2 ** 20));
  const total = extents.reduce((n, e) => n + e.length, 0);
  t.log(`${extents.length} extents, ${total} bytes of 64 MiB`);
  t.true(total < 8 * 2 ** 20, 'holes are not reported as data on a filesystem with holes');
  t.true(extents.every((e, i) => i === 0 || e.offset >= extents[i - 1].offset + extents[i - 1].length), 'in order, not overlapping');
});

test('run writer: neighbouring writes become one run, a gap starts another, callers may reuse their buffers at once', async (t) => {
  const path = join(base, 'runs');
  const file = await openDirectFile(path, { exclusive: true });
  if (!file) {
    if (process.env.CI === 'true') t.fail('the native direct-I/O library is not built');
    t.pass();
    return;
  }
  const writes: Array<[number, number]> = [];
  const counting: typeof file = { ...file, direct: file.direct, write: (offset, data) => (writes.push([offset, data.length]), file.write(offset, data)) };
  const runs = new RunWriter(counting, { runBytes: 1024 * 1024, idleBytes: Infinity });
  const want = Buffer.alloc(4 * 1024 * 1024);
  const chunk = Buffer.alloc(256 * 1024);
  // 0..1 MiB in four pieces (one run), a hole at 1..2 MiB, then 2..3.5 MiB (two runs: 1 MiB + 0.5 MiB).
  for (const offset of [0, 1, 2, 3, 8, 9, 10, 11, 12, 13].map((i) => i * 256 * 1024)) {
    chunk.fill(offset / 65536 + 1);
    chunk.copy(want, offset);
    await runs.write(offset, chunk); // the same buffer every time: copied before write resolves
  }
  await runs.drain();
  await file.truncate(want.length);
  await file.close();
  t.deepEqual(writes, [[0, 1024 * 1024], [2 * 1024 * 1024, 1024 * 1024], [3 * 1024 * 1024, 512 * 1024]]);
  t.true(readFileSync(path).equals(want));
});

test('run writer: an idle file gets a run as soon as it holds idleBytes; while a write is in flight, runs grow', async (t) => {
  const KiB = 1024;
  const writes: Array<{ offset: number; length: number; done: () => void }> = [];
  const file = {
    direct: true,
    write: (offset: number, data: Buffer) => new Promise<void>((resolve) => writes.push({ offset, length: data.length, done: resolve })),
    truncate: async () => {},
    sync: async () => {},
    close: async () => {},
  };
  const runs = new RunWriter(file, { runBytes: 1024 * KiB, idleBytes: 256 * KiB });
  const chunk = Buffer.alloc(128 * KiB);
  await runs.write(0, chunk);
  t.is(writes.length, 0, 'less than idleBytes waits for more');
  await runs.write(128 * KiB, chunk);
  t.deepEqual(writes.map((w) => [w.offset, w.length]), [[0, 256 * KiB]], 'the idle file is written at once');
  for (let i = 2; i < 6; i++) await runs.write(i * 128 * KiB, chunk);
  t.is(writes.length, 1, 'gathered while the first write is in flight');
  writes[0].done();
  await new Promise((r) => setImmediate(r));
  t.deepEqual(writes.map((w) => [w.offset, w.length]), [[0, 256 * KiB], [256 * KiB, 512 * KiB]], 'what gathered goes out when the file turns idle');
  await runs.write(768 * KiB, chunk);
  writes[1].done();
  const drained = runs.drain();
  await new Promise((r) => setImmediate(r));
  t.deepEqual(writes.slice(2).map((w) => [w.offset, w.length]), [[768 * KiB, 128 * KiB]], 'drain writes the rest, however short');
  writes[2].done();
  await drained;
});

test('run writer: a failed write is rethrown by the next write and by drain', async (t) => {
  const failing = { direct: true, write: async () => { throw Object.assign(new Error('no space left'), { code: 'ENOSPC' }); }, truncate: async () => {}, sync: async () => {}, close: async () => {} };
  const runs = new RunWriter(failing, { runBytes: 64 * 1024, idleBytes: Infinity });
  await runs.write(0, Buffer.alloc(64 * 1024));
  // Flushes the first run, which fails (this write may already see it).
  await runs.write(64 * 1024, Buffer.alloc(64 * 1024)).catch(() => undefined);
  await t.throwsAsync(() => runs.drain(), { message: /no space left/ });
  await t.throwsAsync(() => runs.write(128 * 1024, Buffer.alloc(1024)), { message: /no space left/ });
});
