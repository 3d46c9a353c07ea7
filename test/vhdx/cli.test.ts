/** `stillpoint vhdx info` and `stillpoint vhdx export` on a chain made here. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { main } from '../../core/cli/main.ts';
import { createDifferencing, createDynamic, VhdxDisk } from '../../plugins/vhdx/index.ts';
import { tempDir } from './helpers.ts';

const tmp = tempDir('cli');
test.after.always(() => tmp.cleanup());

async function run(argv: string[]): Promise<{ code: number; out: Buffer; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (b: Buffer) => out.push(b));
  stderr.on('data', (b: Buffer) => err.push(b));
  const code = await main(argv, { stdout, stderr, cwd: tmp.dir, env: process.env });
  return { code, out: Buffer.concat(out), err: Buffer.concat(err).toString() };
}

test.serial('vhdx info shows headers, BAT states and the checked chain; vhdx export writes the raw chain', async (t) => {
  const base = join(tmp.dir, 'base.vhdx');
  const top = join(tmp.dir, 'top.avhdx');
  await createDynamic(base, { virtualSize: 16 * 1024 * 1024, blockSize: 1024 * 1024 });
  let d = await VhdxDisk.open(base, { writable: true });
  await d.write(0, Buffer.alloc(1024 * 1024, 1));
  await d.close();
  await createDifferencing(top, base, { blockSize: 1024 * 1024 });
  d = await VhdxDisk.open(top, { writable: true });
  await d.write(4096, Buffer.alloc(8192, 2));
  await d.close();

  const info = await run(['vhdx', 'info', 'top.avhdx']);
  t.is(info.code, 0, info.err);
  const text = info.out.toString();
  t.regex(text, /type differencing/);
  t.regex(text, /PARTIALLY_PRESENT 1/);
  t.regex(text, /found by relative_path\): OK/);
  t.regex(text, /relative_path = \.\\base\.vhdx/);
  const json = JSON.parse((await run(['vhdx', 'info', 'top.avhdx', '--json'])).out.toString());
  t.is(json.layers.length, 2);
  t.true(json.links[0].ok);

  const exp = await run(['vhdx', 'export', 'top.avhdx', '-o', 'out.raw']);
  t.is(exp.code, 0, exp.err);
  const raw = readFileSync(join(tmp.dir, 'out.raw'));
  const piped = await run(['vhdx', 'export', 'top.avhdx', '-o', '-']);
  t.true(piped.out.equals(raw));
  t.is(raw.length, 16 * 1024 * 1024);
  t.true(raw.subarray(0, 4096).every((b) => b === 1));
  t.true(raw.subarray(4096, 12288).every((b) => b === 2));
  t.true(raw.subarray(12288, 1024 * 1024).every((b) => b === 1));
  t.true(raw.subarray(1024 * 1024).every((b) => b === 0));

  const missing = await run(['vhdx', 'info', 'nope.vhdx']);
  t.is(missing.code, 1);
  t.regex(missing.err, /nope\.vhdx/);
  t.is((await run(['vhdx', 'export', 'top.avhdx'])).code, 2);
});
