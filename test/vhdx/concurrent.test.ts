/** A base chain stays readable while another handle writes an AVHDX on top; writers are exclusive. */
import test from 'ava';
import { join } from 'node:path';
import { createDifferencing, createDynamic, VhdxBusyError, VhdxDisk } from '../../plugins/vhdx/index.ts';
import { tempDir } from './helpers.ts';

const tmp = tempDir('concurrent');
test.after.always(() => tmp.cleanup());
const MiB = 1024 * 1024;

test('reading the base while the AVHDX on top is written; a second writer is refused', async (t) => {
  const base = join(tmp.dir, 'base.vhdx');
  await createDynamic(base, { virtualSize: 32 * MiB, blockSize: MiB });
  const w = await VhdxDisk.open(base, { writable: true });
  await w.write(0, Buffer.alloc(32 * MiB, 7));
  await t.throwsAsync(VhdxDisk.open(base, { writable: true }), { instanceOf: VhdxBusyError });
  await w.close();
  const top = join(tmp.dir, 'top.avhdx');
  await createDifferencing(top, base);
  const writer = await VhdxDisk.open(top, { writable: true });
  const reader = await VhdxDisk.open(base);
  const b = Buffer.alloc(MiB);
  await Promise.all(Array.from({ length: 16 }, async (_, i) => {
    await writer.write(i * 2 * MiB, Buffer.alloc(MiB + 512, 9));
    const mine = Buffer.alloc(MiB);
    await reader.read(i * 2 * MiB, mine);
    t.true(mine.every((x) => x === 7), 'the base is unchanged');
  }));
  await writer.flush();
  await reader.read(0, b);
  t.true(b.every((x) => x === 7));
  const chain = await VhdxDisk.open(top);
  await chain.read(0, b);
  t.true(b.every((x) => x === 9));
  await Promise.all([chain.close(), reader.close(), writer.close()]);
});
