/** Every real image in ../shared/testdata/vhdx shows the facts its README lists. */
import test from 'ava';
import { closeSync, copyFileSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { createDynamic, VhdxDisk, VhdxLinkageError } from '../../plugins/vhdx/index.ts';
import { NotFoundError } from '../../core/errors.ts';
import { extractImage, haveShared, md5File, oracle, pyvhdiRead, qemuImg, SKIP_SHARED, tempDir } from './helpers.ts';

const t0 = haveShared ? test.serial : test.skip;
if (!haveShared) test('real VHDX images', (t) => { t.log(SKIP_SHARED); t.pass(); });

const tmp = tempDir('images');
test.after.always(() => tmp.cleanup());
const img = (name: string) => extractImage(name, tmp.dir);

async function sha256Of(disk: VhdxDisk, upTo = disk.virtualSize): Promise<string> {
  const h = createHash('sha256');
  const b = Buffer.alloc(16 << 20);
  for (let o = 0; o < upTo; o += b.length) {
    const n = Math.min(b.length, upTo - o);
    await disk.read(o, b, n);
    h.update(b.subarray(0, n));
  }
  return h.digest('hex');
}

function rawSha(path: string, dir: string, upTo?: number): string {
  const out = join(dir, 'oracle.raw');
  qemuImg(['convert', '-U', '-f', 'vhdx', '-O', 'raw', path, out]);
  const h = createHash('sha256');
  const fd = openSync(out, 'r');
  const b = Buffer.alloc(16 << 20);
  let at = 0;
  for (;;) {
    const want = upTo === undefined ? b.length : Math.min(b.length, upTo - at);
    if (want <= 0) break;
    const n = readSync(fd, b, 0, want, at);
    if (n === 0) break;
    h.update(b.subarray(0, n));
    at += n;
  }
  closeSync(fd);
  rmSync(out, { force: true });
  return h.digest('hex');
}

/** Sets a VHDX file's DataWriteGuid in both headers (recomputing their CRC-32C), as a test fixture. */
function setDataWriteGuid(path: string, guid: string): void {
  const g = guid.replace(/[{}-]/g, '');
  const raw = Buffer.from(g, 'hex');
  const le = Buffer.concat([Buffer.from(raw.subarray(0, 4)).reverse(), Buffer.from(raw.subarray(4, 6)).reverse(), Buffer.from(raw.subarray(6, 8)).reverse(), raw.subarray(8)]);
  const fd = openSync(path, 'r+');
  for (const off of [0x10000, 0x20000]) {
    const h = Buffer.alloc(4096);
    readSync(fd, h, 0, 4096, off);
    le.copy(h, 32);
    h.writeUInt32LE(0, 4);
    h.writeUInt32LE(crc32c(h), 4);
    writeSync(fd, h, 0, 4096, off);
  }
  closeSync(fd);
}

function crc32c(b: Buffer): number {
  let c = ~0 >>> 0;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

const all = (b: Buffer, v: number) => b.every((x) => x === v);

t0('dissect-fixed: FIXED 10 MiB, 2 MiB blocks, 512/4096, 5 FULLY_PRESENT, stale log not replayed, MBR and 0xFF sector', async (t) => {
  const path = img('dissect-fixed.vhdx.gz');
  const before = md5File(path);
  const disk = await VhdxDisk.open(path);
  const info = await disk.info();
  const l = info.layers[0];
  t.is(l.type, 'fixed');
  t.is(disk.virtualSize, 10 * 1024 * 1024);
  t.is(disk.blockSize, 2 * 1024 * 1024);
  t.is(disk.logicalSectorSize, 512);
  t.is(disk.physicalSectorSize, 4096);
  t.is(l.bat.payloadBlocks, 5);
  t.deepEqual(l.bat.payloadStates, { FULLY_PRESENT: 5 });
  t.is(l.activeHeader.logGuid, '00000000-0000-0000-0000-000000000000');
  t.false(l.log.replayed);
  t.is(l.log.staleEntries, 2, 'the two stale entries with valid CRCs are seen but not replayed');
  const s = Buffer.alloc(512);
  await disk.read(0, s);
  t.is(s.subarray(510).toString('hex'), '55aa');
  await disk.read(0x200000, s);
  t.true(all(s, 0xff));
  t.deepEqual(await disk.allocation(), [{ offset: 0, length: 10 * 1024 * 1024, kind: 'data' }]);
  const mine = await sha256Of(disk);
  await disk.close();
  t.is(md5File(path), before, 'read-only open leaves the file unchanged');
  if (oracle('qemu-img').ok) t.is(mine, rawSha(path, tmp.dir), 'same data as qemu-img convert');
});

t0('dissect-dynamic: DYNAMIC 10 MiB, 32 MiB blocks, chunk ratio 128, one FULLY_PRESENT, same layout as the fixed image', async (t) => {
  const disk = await VhdxDisk.open(img('dissect-dynamic.vhdx.gz'));
  const l = (await disk.info()).layers[0];
  t.is(l.type, 'dynamic');
  t.is(disk.virtualSize, 10 * 1024 * 1024);
  t.is(disk.blockSize, 32 * 1024 * 1024);
  t.is(l.metadata.logicalSectorSize, 512);
  t.is(l.metadata.physicalSectorSize, 4096);
  t.is(l.bat.chunkRatio, 128);
  t.deepEqual(l.bat.payloadStates, { FULLY_PRESENT: 1 });
  // the same layout as the fixed image (the volume serials differ): an MBR and the 0xFF sector
  const s = Buffer.alloc(512);
  await disk.read(0, s);
  t.is(s.subarray(510).toString('hex'), '55aa');
  await disk.read(0x200000, s);
  t.true(all(s, 0xff));
  t.deepEqual(await disk.allocation(), [{ offset: 0, length: 10 * 1024 * 1024, kind: 'data' }]);
  if (oracle('qemu-img').ok) t.is(await sha256Of(disk), rawSha(img('dissect-dynamic.vhdx.gz'), tmp.dir));
  await disk.close();
});

t0('dissect-differencing: real AVHDX, 8 GiB, 32 PARTIALLY_PRESENT, locator keys; parent not found; reads over a supplied parent', async (t) => {
  const path = img('dissect-differencing.avhdx.gz');
  const alone = await VhdxDisk.open(path, { alone: true });
  const l = (await alone.info()).layers[0];
  await alone.close();
  t.is(l.type, 'differencing');
  t.is(l.metadata.virtualSize, 8 * 1024 ** 3);
  t.is(l.metadata.blockSize, 2 * 1024 * 1024);
  t.is(l.metadata.logicalSectorSize, 512);
  t.is(l.metadata.physicalSectorSize, 4096);
  t.is(l.bat.chunkRatio, 2048);
  t.is(l.bat.payloadBlocks + l.bat.sectorBitmapBlocks, 4098);
  t.deepEqual(l.bat.payloadStates, { NOT_PRESENT: 4096 - 32, PARTIALLY_PRESENT: 32 });
  t.deepEqual(l.bat.sectorBitmapStates, { SB_BLOCK_PRESENT: 2 });
  const e = l.parentLocator!.entries;
  t.deepEqual(Object.keys(e).sort(), ['absolute_win32_path', 'parent_linkage', 'parent_linkage2', 'relative_path', 'volume_path']);
  t.is(e.parent_linkage2, '{00000000-0000-0000-0000-000000000000}');
  t.false(e.absolute_win32_path.startsWith('\\\\?\\'));

  const err = await t.throwsAsync(VhdxDisk.open(path), { instanceOf: NotFoundError });
  t.regex(err!.message, /parent not found/);
  t.regex(err!.message, /Generation 1_49C4BAF3/);

  const parent = join(tmp.dir, 'zero-parent.vhdx');
  await createDynamic(parent, { virtualSize: 8 * 1024 ** 3 });
  await t.throwsAsync(VhdxDisk.open(path, { parentPaths: [parent] }), { instanceOf: VhdxLinkageError, message: /parent_linkage/ });
  const disk = await VhdxDisk.open(path, { parentPaths: [parent], force: true });
  t.deepEqual(disk.chain, [path, parent]);
  const info = await disk.info();
  t.false(info.links[0].ok);
  t.true(info.links[0].forced);
  const ext = await disk.allocation();
  const data = ext.filter((x) => x.kind === 'data');
  t.true(data.length > 0);
  t.is(ext.reduce((a, x) => a + x.length, 0), disk.virtualSize);
  // the defined extents plus a few zero ranges, compared with libvhdi over the same parent
  const zeros = ext.filter((x) => x.kind === 'zero').slice(0, 3).map((x) => [x.offset, Math.min(x.length, 1 << 20)] as [number, number]);
  const ranges: [number, number][] = [...data.map((x) => [x.offset, x.length] as [number, number]), ...zeros];
  const total = ranges.reduce((a, r) => a + r[1], 0);
  const mine = Buffer.alloc(total);
  let at = 0;
  for (const [o, n] of ranges) { await disk.read(o, mine, n, at); at += n; }
  await disk.close();
  t.false(all(mine, 0), 'the AVHDX holds non-zero data');
  if (oracle('pyvhdi').ok) {
    // libvhdi insists on the linkage: give the zero parent the DataWriteGuid the child expects
    const linked = join(tmp.dir, 'linked-parent.vhdx');
    await createDynamic(linked, { virtualSize: 8 * 1024 ** 3 });
    setDataWriteGuid(linked, e.parent_linkage);
    const ours = await VhdxDisk.open(path, { parentPaths: [linked] });
    t.true((await ours.info()).links[0].ok);
    const again = Buffer.alloc(total);
    at = 0;
    for (const [o, n] of ranges) { await ours.read(o, again, n, at); at += n; }
    await ours.close();
    t.true(again.equals(mine));
    const theirs = pyvhdiRead([path, linked], ranges, join(tmp.dir, 'pyvhdi.out'));
    t.true(theirs.equals(mine), 'same bytes as libvhdi');
  }
});

t0('qemu-iotest-dynamic-1G: Hyper-V DYNAMIC 1 GiB, 3 FULLY_PRESENT + 29 ZERO, 0xA5 / 0x96 / 0x00 pattern', async (t) => {
  const path = img('qemu-iotest-dynamic-1G.vhdx.bz2');
  const disk = await VhdxDisk.open(path);
  const l = (await disk.info()).layers[0];
  t.is(disk.virtualSize, 1024 ** 3);
  t.is(disk.blockSize, 32 * 1024 * 1024);
  t.is(l.metadata.physicalSectorSize, 4096);
  t.deepEqual(l.bat.payloadStates, { FULLY_PRESENT: 3, ZERO: 29 });
  t.deepEqual(await disk.allocation(), [
    { offset: 0, length: 96 * 1024 * 1024, kind: 'data' },
    { offset: 96 * 1024 * 1024, length: 1024 ** 3 - 96 * 1024 * 1024, kind: 'zero' },
  ]);
  const b = Buffer.alloc(0x2100000);
  await disk.read(0, b);
  t.true(all(b, 0xa5));
  await disk.read(0x2100000, b);
  t.true(all(b, 0x96));
  await disk.read(0x4200000, b);
  t.true(all(b, 0));
  await disk.read(1024 ** 3 - b.length, b);
  t.true(all(b, 0));
  if (oracle('qemu-img').ok) t.is(await sha256Of(disk), rawSha(path, tmp.dir));
  await disk.close();
});

t0('qemu-test-disk2vhd: 256 MiB, 2 MiB blocks, 512/512, 128 FULLY_PRESENT, identical headers, metadata listed before BAT', async (t) => {
  const path = img('qemu-test-disk2vhd.vhdx.bz2');
  const disk = await VhdxDisk.open(path);
  const l = (await disk.info()).layers[0];
  t.is(disk.virtualSize, 256 * 1024 * 1024);
  t.is(disk.blockSize, 2 * 1024 * 1024);
  t.is(disk.logicalSectorSize, 512);
  t.is(disk.physicalSectorSize, 512);
  t.deepEqual(l.bat.payloadStates, { FULLY_PRESENT: 128 });
  t.true(l.headers.every((h) => h.valid && h.sequenceNumber === 1));
  t.is(l.regions[0].name, 'Metadata');
  t.is(l.regions[1].name, 'BAT');
  const s = Buffer.alloc(512);
  await disk.read(0, s);
  t.is(s.subarray(510).toString('hex'), '55aa');
  if (oracle('qemu-img').ok) t.is(await sha256Of(disk), rawSha(path, tmp.dir));
  await disk.close();
});

t0('qemu-iotest-dirtylog: the log is replayed before any read (in memory when read-only, into the file when writable)', async (t) => {
  const path = img('qemu-iotest-dirtylog-10G-4M.vhdx.bz2');
  const before = md5File(path);
  const disk = await VhdxDisk.open(path);
  const l = (await disk.info()).layers[0];
  t.is(disk.virtualSize, 10 * 1024 ** 3);
  t.is(disk.blockSize, 1024 * 1024);
  t.is(disk.logicalSectorSize, 512);
  t.is(l.bat.chunkRatio, 4096);
  t.not(l.activeHeader.logGuid, '00000000-0000-0000-0000-000000000000');
  t.true(l.log.replayed);
  t.true(l.log.inMemory);
  t.is(l.log.entriesReplayed, 1);
  t.is(l.log.otherGuidEntries, 6, 'of 7 entries only one carries the header GUID');
  const b = Buffer.alloc(0x1200000);
  await disk.read(0, b);
  t.true(all(b, 0xa5), '0xA5 runs to 0x1200000 after replay');
  const next = Buffer.alloc(512);
  await disk.read(0x1200000, next);
  t.false(all(next, 0xa5));
  const mine = await sha256Of(disk, 64 * 1024 * 1024);
  await disk.close();
  t.is(md5File(path), before, 'read-only replay leaves the file unchanged');

  // writable: replayed into the file, LogGuid cleared; qemu-img then opens it without a log
  const copy = join(tmp.dir, 'dirty-copy.vhdx');
  copyFileSync(path, copy);
  const w = await VhdxDisk.open(copy, { writable: true });
  const wl = (await w.info()).layers[0];
  t.true(wl.log.replayed);
  t.false(wl.log.inMemory);
  t.is(wl.activeHeader.logGuid, '00000000-0000-0000-0000-000000000000');
  await w.close();
  const again = await VhdxDisk.open(copy);
  t.false((await again.info()).layers[0].log.replayed);
  t.is(await sha256Of(again, 64 * 1024 * 1024), mine);
  await again.close();
  if (oracle('qemu-img').ok) {
    t.notThrows(() => qemuImg(['check', copy]));
    // qemu's own replay (check -r all on another copy) gives the same data
    const q = join(tmp.dir, 'dirty-qemu.vhdx');
    copyFileSync(path, q);
    try { qemuImg(['check', '-r', 'all', q]); } catch { /* check reports the replay with a non-zero status */ }
    t.is(rawSha(q, tmp.dir, 64 * 1024 * 1024), mine);
  }
});
