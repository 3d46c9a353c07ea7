import test from 'ava';
import { KeyedSemaphore, Semaphore } from './semaphore.ts';

const tick = () => new Promise((r) => setTimeout(r, 2));

test('never more than limit holders at once, all run', async (t) => {
  const s = new Semaphore(3);
  let now = 0;
  let max = 0;
  const done: number[] = [];
  await Promise.all(Array.from({ length: 10 }, (_, i) => s.run(async () => {
    now++; max = Math.max(max, now);
    await tick();
    now--; done.push(i);
  })));
  t.is(max, 3);
  t.is(done.length, 10);
  t.is(s.active, 0);
});

test('a failing holder releases its slot', async (t) => {
  const s = new Semaphore(1);
  await t.throwsAsync(s.run(async () => { throw new Error('boom'); }), { message: 'boom' });
  t.is(await s.run(async () => 42), 42);
});

test('waiters are served in arrival order; double release is harmless', async (t) => {
  const s = new Semaphore(1);
  const release = await s.acquire();
  const order: number[] = [];
  const a = s.run(async () => { order.push(1); });
  const b = s.run(async () => { order.push(2); });
  release(); release();
  await Promise.all([a, b]);
  t.deepEqual(order, [1, 2]);
  t.is(s.active, 0);
});

test('keys are limited independently', async (t) => {
  const k = new KeyedSemaphore(1);
  let concurrent = 0;
  let max = 0;
  const job = () => async () => { concurrent++; max = Math.max(max, concurrent); await tick(); concurrent--; };
  await Promise.all([k.run('a', job()), k.run('b', job()), k.run('a', job())]);
  t.is(max, 2);
});

test('rejects a limit below 1', (t) => {
  t.throws(() => new Semaphore(0), { message: 'semaphore limit must be a positive integer, got 0' });
});
