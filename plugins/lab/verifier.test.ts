import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commitPage, encodeCommit, encodeDataPage, encodeSuperblock, layoutFor, pageOffset, pickPages, prng, PAGE_SIZE } from './guest/format.ts';
import { verifyDisk, verifyRawImage } from './verifier.ts';

const SIZE = 4 * 1024 * 1024;

/** The workload's write stream for `txs` transactions, as a list of (offset, page) writes. */
function writeStream(txs: number, seed = 7) {
  const layout = layoutFor(SIZE, 'vm-1', 'SCSI 0:0', { dataPages: 64 });
  const random = prng(seed);
  const writes: Array<{ offset: number; page: Buffer; seq: number; commit: boolean }> = [{ offset: 0, page: encodeSuperblock(layout), seq: 0, commit: true }];
  for (let seq = 1; seq <= txs; seq++) {
    const pages = pickPages(layout, random, 3 + (seq % 5));
    const crcs: number[] = [];
    for (const p of pages) {
      const page = encodeDataPage(seq, p, pages);
      crcs.push(page.readUInt32LE(PAGE_SIZE - 4));
      writes.push({ offset: pageOffset(p), page, seq, commit: false });
    }
    writes.push({ offset: pageOffset(commitPage(layout, seq)), page: encodeCommit(seq, pages, crcs), seq, commit: true });
  }
  return writes;
}

function image(writes: ReturnType<typeof writeStream>, upTo: number): Buffer {
  const disk = Buffer.alloc(SIZE);
  for (const w of writes.slice(0, upTo)) w.page.copy(disk, w.offset);
  return disk;
}

const source = (disk: Buffer) => ({
  async read(offset: number, target: Buffer, length = target.length, targetOffset = 0) { disk.copy(target, targetOffset, offset, offset + length); },
});

test('an image cut at a transaction boundary is consistent and names its last transaction', async (t) => {
  const writes = writeStream(200);
  for (let cut = 1; cut <= writes.length; cut++) {
    if (!writes[cut - 1].commit) continue;
    const verdict = await verifyDisk(source(image(writes, cut)));
    t.true(verdict.consistent, `cut after write ${cut}: ${verdict.problems.join('; ')}`);
    t.is(verdict.lastTransaction, writes[cut - 1].seq);
  }
});

test('an image cut inside a transaction is torn or uncommitted, never consistent', async (t) => {
  const writes = writeStream(200);
  let torn = 0;
  let uncommitted = 0;
  for (let cut = 2; cut <= writes.length; cut++) {
    if (writes[cut - 1].commit) continue;
    const verdict = await verifyDisk(source(image(writes, cut)));
    t.false(verdict.consistent, `cut after write ${cut} (inside transaction ${writes[cut - 1].seq})`);
    if (verdict.torn.length) torn++;
    if (verdict.uncommitted.length) uncommitted++;
    t.is(verdict.lastTransaction, writes[cut - 1].seq - 1);
  }
  t.true(torn > 0 && uncommitted > 0, `torn cuts ${torn}, uncommitted cuts ${uncommitted}`);
});

test('a damaged page is reported; an unformatted disk is refused with a clear error', async (t) => {
  const writes = writeStream(20);
  const disk = image(writes, writes.length);
  const victim = writes.find((w) => !w.commit && w.seq === 20)!;
  disk[victim.offset + 100] ^= 0xff;
  const verdict = await verifyDisk(source(disk));
  t.false(verdict.consistent);
  t.true(verdict.problems.some((p) => p.includes('checksum mismatch')), verdict.problems.join('; '));
  await t.throwsAsync(verifyDisk(source(Buffer.alloc(SIZE)), 'blank.raw'), { message: /blank\.raw.*never formatted/ });
});

test('verifyRawImage reads a raw file (shorter than the disk reads as zeros)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lab-verify-'));
  try {
    const writes = writeStream(30);
    const file = join(dir, 'disk.raw');
    await writeFile(file, image(writes, writes.length));
    const verdict = await verifyRawImage(file);
    t.true(verdict.consistent, verdict.problems.join('; '));
    t.is(verdict.lastTransaction, 30);
    t.is(verdict.diskId, 'SCSI 0:0');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
