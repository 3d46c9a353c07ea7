/**
 * Randomized round trips: random writes applied to a raw model and to a chain of 1 to 4 layers,
 * merged and not merged, compared byte for byte, and cross-checked with qemu-img (base disks)
 * and libvhdi (chains).
 */
import test from 'ava';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createDifferencing, createDynamic, createFixed, mergeIntoParent, VhdxDisk } from '../../plugins/vhdx/index.ts';
import { oracle, pyvhdiRead, qemuImg, tempDir } from './helpers.ts';

const tmp = tempDir('roundtrip');
test.after.always(() => tmp.cleanup());
const MiB = 1024 * 1024;

/** xorshift32: the seed of a failing case reproduces it. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  return { next, below: (n: number) => next() % n, pick: <T>(a: T[]) => a[next() % a.length] };
}

async function randomWrites(disk: VhdxDisk, model: Buffer, r: ReturnType<typeof rng>, count: number): Promise<void> {
  const ss = disk.logicalSectorSize;
  for (let i = 0; i < count; i++) {
    const aligned = r.below(4) !== 0;
    let off = r.below(model.length);
    let len = 1 + r.below(Math.min(model.length - off, r.below(8) === 0 ? 3 * disk.blockSize : 192 * 1024));
    if (aligned) {
      off = Math.floor(off / ss) * ss;
      len = Math.max(ss, Math.floor(len / ss) * ss);
      if (off + len > model.length) len = model.length - off;
    }
    const data = Buffer.alloc(len);
    const kind = r.below(5);
    if (kind === 0) data.fill(0); // zeros are data too
    else if (kind === 1) data.fill(r.below(256));
    else for (let k = 0; k < len; k++) data[k] = r.next() & 0xff;
    await disk.write(off, data);
    data.copy(model, off);
    if (r.below(10) === 0) await disk.flush();
  }
}

async function readAll(disk: VhdxDisk): Promise<Buffer> {
  const b = Buffer.alloc(disk.virtualSize);
  // several reads of odd sizes, to cross block and run boundaries at odd places
  let at = 0;
  const step = 3 * MiB + 4096 + 512;
  while (at < b.length) { const n = Math.min(step, b.length - at); await disk.read(at, b, n, at); at += n; }
  return b;
}

async function checkChain(t: any, top: string, model: Buffer, chain: string[], label: string, libvhdi = true): Promise<void> {
  const disk = await VhdxDisk.open(top);
  t.deepEqual(disk.chain, chain, `${label}: chain resolved by the parent locators`);
  const mine = await readAll(disk);
  const ext = await disk.allocation();
  await disk.close();
  t.true(mine.equals(model), `${label}: chain reads what was written`);
  let at = 0;
  for (const e of ext) {
    t.is(e.offset, at, `${label}: extents without gaps`);
    if (e.kind === 'zero') t.true(model.subarray(e.offset, e.offset + e.length).every((x) => x === 0), `${label}: zero extent at ${e.offset} reads zeros`);
    at += e.length;
  }
  t.is(at, model.length);
  if (libvhdi && chain.length > 1 && oracle('pyvhdi').ok) {
    const theirs = pyvhdiRead(chain, [[0, model.length]], join(tmp.dir, 'py.out'));
    t.true(theirs.equals(model), `${label}: libvhdi reads the same chain`);
  }
}

/** qemu-img check + compare for 512-byte-sector disks (QEMU refuses 4096); libvhdi for the others. */
function qemuCheck(t: any, path: string, model: Buffer, label: string, lss: number): void {
  if (lss !== 512) {
    if (oracle('pyvhdi').ok) t.true(pyvhdiRead([path], [[0, model.length]], join(tmp.dir, 'py.out')).equals(model), `${label}: libvhdi reads the same`);
    return;
  }
  if (!oracle('qemu-img').ok) return;
  const raw = join(tmp.dir, 'model.raw');
  writeFileSync(raw, model);
  t.notThrows(() => qemuImg(['check', '-f', 'vhdx', path]), `${label}: qemu-img check`);
  t.notThrows(() => qemuImg(['compare', '-f', 'vhdx', '-F', 'raw', path, raw]), `${label}: qemu-img compare with the raw model`);
  rmSync(raw, { force: true });
}

for (const [i, seed] of Array.from({ length: 16 }, (_, k) => 0x1001 * (k + 1)).entries()) {
  const merged = i % 2 === 1;
  test.serial(`round trip seed ${seed.toString(16)} (${merged ? 'merged' : 'not merged'})`, async (t) => {
    const r = rng(seed);
    const lss = r.pick([512, 4096] as const);
    const blockSize = r.pick([1, 2, 4]) * MiB;
    const virtualSize = (8 * MiB + r.below(40) * MiB + (r.below(2) ? 0 : r.below(900) * 4096));
    const layers = 1 + r.below(4);
    const fixed = r.below(3) === 0;
    const dir = join(tmp.dir, `s${seed}`);
    rmSync(dir, { recursive: true, force: true });
    await import('node:fs').then((fs) => fs.mkdirSync(dir));
    const base = join(dir, 'base.vhdx');
    t.log(`lss ${lss}, block ${blockSize / MiB} MiB, size ${virtualSize}, ${fixed ? 'fixed' : 'dynamic'} base, ${layers} layer(s)`);
    if (fixed) await createFixed(base, { virtualSize, blockSize, logicalSectorSize: lss });
    else await createDynamic(base, { virtualSize, blockSize, logicalSectorSize: lss, physicalSectorSize: 4096 });
    const model = Buffer.alloc(virtualSize);
    const chain = [base];
    let d = await VhdxDisk.open(base, { writable: true });
    await randomWrites(d, model, r, 25);
    await d.close();
    qemuCheck(t, base, model, 'base', lss);
    for (let k = 1; k < layers; k++) {
      const child = join(dir, `snap${k}.avhdx`);
      await createDifferencing(child, chain[0], { blockSize: r.pick([1, 2]) * MiB });
      chain.unshift(child);
      d = await VhdxDisk.open(child, { writable: true });
      await randomWrites(d, model, r, 25);
      await d.close();
    }
    await checkChain(t, chain[0], model, chain, `${layers}-layer chain`);
    if (merged) {
      while (chain.length > 1) {
        const top = chain.shift()!;
        await mergeIntoParent(top);
        // before deleting the child the chain still reads the same (parent_linkage2)
        await checkChain(t, top, model, [top, ...chain], `child over merged parent`, false); // libvhdi ignores parent_linkage2
        rmSync(top);
        t.false(existsSync(top));
        await checkChain(t, chain[0], model, chain, `after merging into ${chain[0].split('/').pop()}`);
      }
      qemuCheck(t, base, model, 'merged base', lss);
    }
  });
}
