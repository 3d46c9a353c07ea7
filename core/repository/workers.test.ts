import { randomBytes } from 'node:crypto';
import test from 'ava';
import { BlobCodec, chunkNamer } from './codec.ts';
import { ChunkWorkers, type SealResult } from './workers.ts';

const settings = { compressionLevel: 1, chunkHash: 'blake3-keyed' } as const;

/** Each chunk in a buffer of its own with room for the sealed blob (as a backup hands them over). */
function chunkBuffers(chunks: Buffer[]): ArrayBuffer[] {
  return chunks.map((b) => {
    const ab = new ArrayBuffer(b.length + 64);
    new Uint8Array(ab).set(b);
    return ab;
  });
}

test('sealMany: each chunk of one message is hashed, compressed and encrypted, zeros are named null, and a bad one fails alone', async (t) => {
  const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  const workers = new ChunkWorkers(keys, settings, 1);
  try {
    const size = 64 * 1024;
    const text = Buffer.alloc(size, 'stillpoint ');
    const random = randomBytes(size);
    const bufs = chunkBuffers([text, Buffer.alloc(size), random, text]);
    // The third chunk claims more bytes than its buffer holds.
    const results = await Promise.allSettled(workers.sealMany(bufs, [size, size, size * 2, size]));
    t.is(results[2].status, 'rejected');
    const ok = results.filter((r): r is PromiseFulfilledResult<SealResult> => r.status === 'fulfilled').map((r) => r.value);
    t.is(ok.length, 3);
    t.is(ok[0].id, chunkNamer('blake3-keyed', keys)(text));
    t.is(ok[1].id, null, 'an all-zero chunk is not stored');
    t.is(ok[2].id, ok[0].id);
    const codec = new BlobCodec({ keys, compressionLevel: 1 });
    t.true(codec.open(`chunks/${ok[0].id!.slice(0, 2)}/${ok[0].id}`, ok[0].blob!).equals(text));
    t.true(ok[0].blob!.length < size / 4, 'text is compressed');
    t.false(ok[0].unchanged);
  } finally {
    await workers.close();
  }
});

test('sealMany: a chunk that hashes to the name its place had before is only named, the others are sealed', async (t) => {
  const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  const workers = new ChunkWorkers(keys, settings, 1);
  try {
    const size = 64 * 1024;
    const same = Buffer.alloc(size, 'unchanged ');
    const other = Buffer.alloc(size, 'changed ');
    const bufs = chunkBuffers([same, other, Buffer.alloc(size)]);
    const before = Array(3).fill(chunkNamer('blake3-keyed', keys)(same));
    const [a, b, zero] = await Promise.all(workers.sealMany(bufs, [size, size, size], before));
    t.is(a.id, before[0]);
    t.true(a.unchanged);
    t.is(a.blob, null, 'not compressed or encrypted');
    t.is(b.id, chunkNamer('blake3-keyed', keys)(other));
    t.false(b.unchanged);
    t.true(new BlobCodec({ keys, compressionLevel: 1 }).open(`chunks/${b.id!.slice(0, 2)}/${b.id}`, b.blob!).equals(other));
    t.is(zero.id, null);
    t.false(zero.unchanged);
  } finally {
    await workers.close();
  }
});

test('workers start one after another: keys and tasks posted before a worker runs reach it, every worker takes work, close works at any point', async (t) => {
  const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  // Keys and tasks right away, before the later workers of the pool have started.
  const workers = new ChunkWorkers(keys, settings, 3);
  try {
    const size = 16 * 1024;
    const chunks = Array.from({ length: 6 }, (_, i) => Buffer.alloc(size, `chunk ${i} `));
    // One message per chunk to the least loaded worker: the later workers get tasks before they run.
    const sealed = await Promise.all(chunkBuffers(chunks).map((buf) => workers.sealMany([buf], [size])[0]));
    const codec = new BlobCodec({ keys, compressionLevel: 1 });
    sealed.forEach((r, i) => {
      t.is(r.id, chunkNamer('blake3-keyed', keys)(chunks[i]));
      t.true(codec.open(`chunks/${r.id!.slice(0, 2)}/${r.id}`, r.blob!).equals(chunks[i]));
    });
  } finally {
    await workers.close();
  }
  // Closed before the second one started: nothing is left running, later tasks are refused.
  const early = new ChunkWorkers(keys, settings, 4);
  await early.close();
  await t.throwsAsync(Promise.all(early.sealMany(chunkBuffers([Buffer.alloc(1024, 1)]), [1024])), { message: /closed/ });
});
