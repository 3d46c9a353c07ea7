/** Reads run off the event loop and write straight into the caller's Buffer (no copy). */
import test from 'ava';
import { join } from 'node:path';
import { createFixed, VhdxDisk } from '../../plugins/vhdx/index.ts';
import { sleepFill } from '../../plugins/vhdx/testing.ts';
import { tempDir } from './helpers.ts';

const tmp = tempDir('async');
test.after.always(() => tmp.cleanup());

test.serial('a native call does not block the event loop, and writes into the Buffer itself while running', async (t) => {
  const target = Buffer.alloc(64 * 1024);
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 5);
  const pending = sleepFill(400, target, 0x5a);
  await new Promise((r) => setTimeout(r, 150));
  // the call is still sleeping on its worker thread, yet the byte it wrote first is visible here:
  // the library holds a pointer to this Buffer's memory, not a copy
  t.is(target[0], 0x5a);
  t.is(target[1], 0, 'the rest is written only after the sleep');
  const addr = await pending;
  clearInterval(timer);
  t.true(ticks >= 20, `the event loop kept ticking during the call (${ticks} ticks)`);
  t.true(target.every((b) => b === 0x5a));
  t.true(addr > 0);
});

test.serial('a long VhdxDisk.read keeps the event loop responsive and fills only the requested window', async (t) => {
  const path = join(tmp.dir, 'big.vhdx');
  await createFixed(path, { virtualSize: 1024 * 1024 * 1024, blockSize: 32 * 1024 * 1024 });
  const disk = await VhdxDisk.open(path);
  const big = Buffer.alloc(512 * 1024 * 1024 + 2, 0xee);
  let last = performance.now();
  let maxGap = 0;
  const timer = setInterval(() => { const n = performance.now(); maxGap = Math.max(maxGap, n - last); last = n; }, 2);
  const start = performance.now();
  await disk.read(0, big, 512 * 1024 * 1024, 1);
  const took = performance.now() - start;
  clearInterval(timer);
  await disk.close();
  t.log(`read 512 MiB in ${took.toFixed(0)} ms; longest event-loop gap ${maxGap.toFixed(1)} ms`);
  t.is(big[0], 0xee);
  t.is(big[big.length - 1], 0xee);
  t.is(big[1], 0);
  t.is(big[big.length - 2], 0);
  if (took > 60) t.true(maxGap < took * 0.75, 'timers fired while the read ran');
  else t.log('the read was too quick to measure the event loop; the sleep probe above covers it');
});
