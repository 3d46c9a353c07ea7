import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import test from 'ava';
import { RawFileDisk } from './raw-source.ts';

test('RawFileDisk.readv fills consecutive buffers with the bytes read() gives, and refuses a range past the end', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-raw-'));
  try {
    const bytes = randomBytes(1 << 20);
    const path = join(dir, 'disk.img');
    await writeFile(path, bytes);
    const disk = await RawFileDisk.open(path);
    try {
      const targets = [Buffer.alloc(4096), Buffer.alloc(100_000), Buffer.alloc(1)];
      await disk.readv(12_345, targets);
      t.true(Buffer.concat(targets).equals(bytes.subarray(12_345, 12_345 + 104_097)));
      const one = Buffer.alloc(100_000);
      await disk.read(12_345 + 4096, one);
      t.true(one.equals(targets[1]));
      await t.throwsAsync(disk.readv(bytes.length - 10, [Buffer.alloc(11)]), { message: /outside the disk/ });
    } finally {
      await disk.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
