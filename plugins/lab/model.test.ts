import test from 'ava';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeAtomic } from './model.ts';

test('writeAtomic: writers of one file at the same time each replace it whole, and leave no temporary file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-lab-model-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'state', 'vm.json');
  const texts = Array.from({ length: 16 }, (_, i) => JSON.stringify({ writer: i, pad: String(i).repeat(50_000) }));
  await Promise.all(texts.map((text) => writeAtomic(path, text)));
  t.true(texts.includes(await readFile(path, 'utf8')));
  t.deepEqual(await readdir(join(dir, 'state')), ['vm.json']);
});
