/**
 * Crash safety by write order: a writer process is killed (SIGKILL) in the middle of writing
 * to a dynamic disk and to an AVHDX; the files must still open, pass qemu-img check / read
 * through libvhdi, and hold every batch the writer had flushed before it died.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createDifferencing, createDynamic, VhdxDisk } from '../../plugins/vhdx/index.ts';
import { oracle, pyvhdiRead, qemuImg, repoRoot, tempDir } from './helpers.ts';

const tmp = tempDir('crash');
test.after.always(() => tmp.cleanup());
const MiB = 1024 * 1024;

const writer = `
import { VhdxDisk } from './plugins/vhdx/index.ts';
const d = await VhdxDisk.open(process.argv[1], { writable: true });
for (let batch = 1; ; batch++) {
  for (let k = 0; k < 4; k++) {
    const off = ((batch * 7 + k * 13) % 60) * 1024 * 1024 + ((batch * 4096 * (k + 1)) % (512 * 1024));
    await d.write(off, Buffer.alloc(64 * 1024, (batch * 4 + k) & 0xff || 1));
  }
  await d.flush();
  process.stdout.write('flushed ' + batch + '\\n');
}
`;

/** The expected content after `batches` flushed batches, replayed on a model. */
function model(size: number, batches: number, base?: Buffer): Buffer {
  const m = base ? Buffer.from(base) : Buffer.alloc(size);
  for (let batch = 1; batch <= batches; batch++) {
    for (let k = 0; k < 4; k++) {
      const off = ((batch * 7 + k * 13) % 60) * MiB + ((batch * 4096 * (k + 1)) % (512 * 1024));
      m.fill((batch * 4 + k) & 0xff || 1, off, off + 64 * 1024);
    }
  }
  return m;
}

async function killMidway(path: string, ms: number): Promise<number> {
  const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', writer, path], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  let flushed = 0;
  child.stdout.on('data', (b: Buffer) => {
    for (const m of b.toString().matchAll(/flushed (\d+)/g)) flushed = Number(m[1]);
  });
  await new Promise<void>((res) => {
    const start = () => setTimeout(() => child.kill('SIGKILL'), ms);
    child.stdout.once('data', start);
    child.on('close', () => res()); // after stdout is drained
  });
  return flushed;
}

async function readAll(path: string): Promise<Buffer> {
  const d = await VhdxDisk.open(path);
  const b = Buffer.alloc(d.virtualSize);
  await d.read(0, b);
  await d.close();
  return b;
}

test.serial('a writer killed mid-write leaves a valid dynamic VHDX holding every flushed batch', async (t) => {
  for (const ms of [30, 120, 400]) {
    const path = join(tmp.dir, `dyn-${ms}.vhdx`);
    await createDynamic(path, { virtualSize: 64 * MiB, blockSize: MiB });
    const flushed = await killMidway(path, ms);
    t.true(flushed > 0);
    const data = await readAll(path);
    const atFlush = model(64 * MiB, flushed);
    const next = model(64 * MiB, flushed + 1);
    // every byte is what the last flush left, or what the unflushed next batch wrote
    let bad = -1;
    for (let i = 0; i < data.length; i++) if (data[i] !== atFlush[i] && data[i] !== next[i]) { bad = i; break; }
    t.is(bad, -1, `after ${flushed} flushed batches (killed at ${ms} ms) byte ${bad} holds neither`);
    if (oracle('qemu-img').ok) t.notThrows(() => qemuImg(['check', '-f', 'vhdx', path]));
  }
});

test.serial('a writer killed mid-write leaves a valid AVHDX chain holding every flushed batch', async (t) => {
  const base = join(tmp.dir, 'base.vhdx');
  await createDynamic(base, { virtualSize: 64 * MiB, blockSize: MiB });
  const d = await VhdxDisk.open(base, { writable: true });
  const pattern = Buffer.alloc(64 * MiB);
  for (let i = 0; i < pattern.length; i += 4096) pattern[i] = (i / 4096) & 0xff;
  await d.write(0, pattern);
  await d.close();
  const top = join(tmp.dir, 'top.avhdx');
  await createDifferencing(top, base, { blockSize: MiB });
  const flushed = await killMidway(top, 150);
  const data = await readAll(top);
  const atFlush = model(64 * MiB, flushed, pattern);
  const next = model(64 * MiB, flushed + 1, pattern);
  let bad = -1;
  for (let i = 0; i < data.length; i++) if (data[i] !== atFlush[i] && data[i] !== next[i]) { bad = i; break; }
  t.is(bad, -1, `after ${flushed} flushed batches byte ${bad} holds neither`);
  if (oracle('pyvhdi').ok) t.true(pyvhdiRead([top, base], [[0, data.length]], join(tmp.dir, 'py.out')).equals(data), 'libvhdi reads the same chain');
});
