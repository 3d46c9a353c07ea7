#!/usr/bin/env -S node --import=tsx
/**
 * VHDX read benchmark (issue 3). Prints a table of throughputs and ratios:
 *  - sequential read of a 4 GiB dynamic VHDX whose data is in the page cache, through the
 *    TypeScript API into Buffers, against `cat FILE > /dev/null`, `qemu-img convert -O raw` to
 *    tmpfs and libvhdi (pyvhdi) on the same file, measured in the same run;
 *  - a 64 GiB dynamic disk with 1 GiB written: reading its defined data (allocation map + reads)
 *    against reading 1 GiB.
 * Usage: node --import=tsx scripts/bench/vhdx-read.ts [--dir DIR] [--size-gib 4] [--keep]
 * Targets: ours/cat >= 0.80; ours faster than qemu-img and libvhdi; sparse/1 GiB ≈ 1.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createDynamic, VhdxDisk } from '../../plugins/vhdx/index.ts';

const { values } = parseArgs({ options: { dir: { type: 'string' }, 'size-gib': { type: 'string' }, keep: { type: 'boolean' } } });
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const size = Number(values['size-gib'] ?? 4) * GiB;
const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'stillpoint-vhdx-bench-'));
mkdirSync(dir, { recursive: true });
const shm = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/stillpoint-vhdx-bench-') : undefined;

function best(n: number, f: () => number): number {
  let b = Infinity;
  for (let i = 0; i < n; i++) b = Math.min(b, f());
  return b;
}
function timeSync(f: () => void): number {
  const t = performance.now();
  f();
  return (performance.now() - t) / 1000;
}
async function timeAsync(f: () => Promise<void>): Promise<number> {
  const t = performance.now();
  await f();
  return (performance.now() - t) / 1000;
}

/** Fills a dynamic disk with non-zero data, 32 MiB at a time. */
async function makeDisk(path: string, virtualSize: number, written: number): Promise<void> {
  if (existsSync(path)) return;
  await createDynamic(path, { virtualSize });
  const d = await VhdxDisk.open(path, { writable: true });
  const b = Buffer.alloc(32 * MiB);
  for (let i = 0; i < b.length; i += 8) b.writeDoubleLE(Math.random(), i);
  const stride = written < virtualSize ? Math.floor(virtualSize / (written / b.length)) : b.length;
  for (let at = 0, n = 0; n < written; at += stride, n += b.length) {
    b[0] = n & 0xff;
    await d.write(at, b);
  }
  await d.close();
}

/** Reads [0, upTo) or the given extents through the API, `depth` reads of `chunk` bytes in flight. */
async function readApi(path: string, extents?: { offset: number; length: number }[], chunk = 8 * MiB, depth = 2): Promise<number> {
  const d = await VhdxDisk.open(path);
  const list = extents ?? [{ offset: 0, length: d.virtualSize }];
  const jobs: [number, number][] = [];
  for (const e of list) for (let at = e.offset; at < e.offset + e.length; at += chunk) jobs.push([at, Math.min(chunk, e.offset + e.length - at)]);
  const bufs = Array.from({ length: depth }, () => Buffer.allocUnsafe(chunk));
  let next = 0;
  let bytes = 0;
  await Promise.all(bufs.map(async (b) => {
    while (next < jobs.length) {
      const [o, n] = jobs[next++];
      await d.read(o, b, n);
      bytes += n;
    }
  }));
  await d.close();
  return bytes;
}

const rows: [string, string, string, string][] = [];
const add = (what: string, seconds: number, bytes: number, ratio: string) =>
  rows.push([what, `${seconds.toFixed(3)} s`, `${(bytes / seconds / MiB).toFixed(0)} MiB/s`, ratio]);

const big = join(dir, 'bench-4g.vhdx');
const sparse = join(dir, 'bench-64g-1g.vhdx');
console.error(`preparing ${big} and ${sparse} ...`);
await makeDisk(big, size, size);
await makeDisk(sparse, 64 * GiB, GiB);
spawnSync('sh', ['-c', `cat '${big}' '${sparse}' > /dev/null`]);

const catT = best(5, () => timeSync(() => execFileSync('sh', ['-c', `cat '${big}' > /dev/null`])));
const fileBytes = statSync(big).size;
add('cat FILE > /dev/null', catT, fileBytes, '1.00 (reference)');

let oursT = Infinity;
for (let i = 0; i < 5; i++) oursT = Math.min(oursT, await timeAsync(async () => { await readApi(big); }));
const catRate = fileBytes / catT;
add('Stillpoint VhdxDisk.read (8 MiB x 2 in flight)', oursT, size, `${(size / oursT / catRate).toFixed(2)} of cat (target >= 0.80)`);

let oneT = Infinity;
for (let i = 0; i < 5; i++) oneT = Math.min(oneT, await timeAsync(async () => { await readApi(big, [{ offset: 0, length: GiB }]); }));
add('Stillpoint VhdxDisk.read (8 MiB x 1 in flight)', await timeAsync(async () => { await readApi(big, undefined, 8 * MiB, 1); }), size, '');

if (shm && spawnSync('qemu-img', ['--version']).status === 0) {
  const out = join(shm, 'out.raw');
  const q = best(2, () => { const t = timeSync(() => execFileSync('qemu-img', ['convert', '-U', '-f', 'vhdx', '-O', 'raw', big, out])); rmSync(out, { force: true }); return t; });
  add('qemu-img convert -O raw (to tmpfs)', q, size, `Stillpoint is ${(q / oursT).toFixed(2)}x faster`);
} else add('qemu-img convert -O raw (to tmpfs)', NaN, 0, 'skipped: qemu-img or /dev/shm missing');

if (spawnSync('/usr/bin/python3', ['-c', 'import pyvhdi']).status === 0) {
  const script = 'import pyvhdi,sys\nf=pyvhdi.file();f.open(sys.argv[1]);n=f.get_media_size();o=0\nwhile o<n:\n  b=f.read(min(8<<20,n-o));o+=len(b)\n';
  const l = best(1, () => timeSync(() => execFileSync('/usr/bin/python3', ['-c', script, big])));
  add('libvhdi (pyvhdi, 8 MiB reads)', l, size, `Stillpoint is ${(l / oursT).toFixed(2)}x faster`);
} else add('libvhdi (pyvhdi)', NaN, 0, 'skipped: python3-libvhdi missing');

// 64 GiB disk with 1 GiB written: the allocation map lets a backup read only the data
let defined = 0;
let sparseT = Infinity;
for (let i = 0; i < 5; i++) {
  sparseT = Math.min(sparseT, await timeAsync(async () => {
    const d = await VhdxDisk.open(sparse);
    const ext = (await d.allocation()).filter((e) => e.kind === 'data');
    await d.close();
    defined = await readApi(sparse, ext);
  }));
}
add('64 GiB disk, 1 GiB written: allocation map + defined data', sparseT, defined, `${(sparseT / oneT).toFixed(2)} of reading 1 GiB (target ≈ 1)`);
add('read 1 GiB of the 4 GiB disk (reference)', oneT, GiB, '1.00');

const w = [52, 12, 14, 0];
console.log(['what', 'time', 'throughput', 'ratio'].map((h, i) => h.padEnd(w[i])).join(' | '));
console.log(w.map((x) => '-'.repeat(Math.max(x, 10))).join('-|-'));
for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i])).join(' | '));

if (!values.keep && !values.dir) rmSync(dir, { recursive: true, force: true });
if (shm) rmSync(shm, { recursive: true, force: true });
