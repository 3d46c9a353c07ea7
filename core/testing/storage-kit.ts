/**
 * The storage-target test kit. Every storage plugin runs it against itself:
 *
 * ```ts
 * import test from 'ava';
 * import { storageTargetKit } from 'stillpoint/testing';
 * storageTargetKit(test, {
 *   name: 'my-store',
 *   async setup() { const target = await openMyStore(...); return { target, teardown: () => target.close() }; },
 * });
 * ```
 *
 * It checks the rules of `core/contracts/storage.ts`: round trips (empty, small, several MiB),
 * missing keys (NotFoundError, head null), overwrites, ranged gets, listing thousands of keys by
 * prefix, deletes, concurrent puts to one key, refusal of invalid keys, and, when the plugin can
 * cause a real fault (`interruptedPut`), that a put failing in the middle leaves the old value.
 * Each test gets a fresh target from `setup()`; tests run serially.
 */
import { randomBytes } from 'node:crypto';
import type { ExecutionContext, TestFn } from 'ava';
import type { StorageTarget } from '../contracts/storage.ts';
import { NotFoundError } from '../errors.ts';

export interface StorageKitSetup {
  /** A target over an empty store. */
  target: StorageTarget;
  /**
   * Make a put of `data` to `key` fail in the middle through a real fault (a full filesystem,
   * a dropped connection). Resolves with what the put rejected with.
   */
  interruptedPut?(key: string, data: Buffer): Promise<unknown>;
  /** A target over the same store, for reading back after a fault (default: `target`). */
  reopen?(): Promise<StorageTarget>;
  teardown(): Promise<void>;
}

export interface StorageKitOptions {
  /** Shown in the test titles. */
  name: string;
  setup(): Promise<StorageKitSetup>;
  /** How many keys the listing test writes (default 2000). */
  listKeys?: number;
  /** Size of the large round trip in bytes (default 5 MiB). */
  largeSize?: number;
}

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const k of it) out.push(k);
  return out.sort();
}

async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (i < items.length) await fn(items[i++]);
  }));
}

export function storageTargetKit(test: TestFn, options: StorageKitOptions): void {
  const title = (what: string) => `storage kit (${options.name}): ${what}`;
  const run = (what: string, body: (t: ExecutionContext, s: StorageKitSetup) => Promise<void>) => {
    test.serial(title(what), async (t) => {
      const s = await options.setup();
      try {
        await body(t, s);
      } finally {
        await s.teardown();
      }
    });
  };

  run('put then get returns the same bytes; head gives the size', async (t, { target }) => {
    const large = randomBytes(options.largeSize ?? 5 * 2 ** 20);
    const cases: Array<[string, Buffer]> = [
      ['empty', Buffer.alloc(0)],
      ['one', Buffer.from([0x42])],
      ['dir/sub/small.bin', randomBytes(1000)],
      ['large', large],
    ];
    for (const [key, data] of cases) await target.put(key, data);
    for (const [key, data] of cases) {
      const got = await target.get(key);
      t.true(Buffer.isBuffer(got), `get(${key}) returns a Buffer`);
      t.true(got.equals(data), `get(${key}) returns what was put`);
      t.deepEqual(await target.head(key), { size: data.length }, `head(${key})`);
    }
  });

  run('a missing key: get rejects with NotFoundError, head is null, delete is fine', async (t, { target }) => {
    await t.throwsAsync(() => target.get('no/such/key'), { instanceOf: NotFoundError });
    t.is(await target.head('no/such/key'), null);
    await target.put('some/key', Buffer.from('x'));
    await t.throwsAsync(() => target.get('some/key/below'), { instanceOf: NotFoundError }, 'a key below a key is missing');
    t.is(await target.head('some'), null, 'a "directory" is not a key');
    await t.notThrowsAsync(() => target.delete('no/such/key'));
    if (target.getRange) await t.throwsAsync(() => target.getRange!('no/such/key', 0, 1), { instanceOf: NotFoundError });
  });

  run('overwrite replaces the whole value (longer and shorter)', async (t, { target }) => {
    await target.put('k', Buffer.from('first value'));
    await target.put('k', Buffer.from('a much longer second value'));
    t.is((await target.get('k')).toString(), 'a much longer second value');
    await target.put('k', Buffer.from('3'));
    t.is((await target.get('k')).toString(), '3');
    t.deepEqual(await target.head('k'), { size: 1 });
    t.deepEqual(await collect(target.list('')), ['k'], 'an overwrite leaves no other key behind');
  });

  run('getRange returns the bytes asked for', async (t, { target }) => {
    if (!target.getRange) {
      t.pass('this target has no getRange');
      return;
    }
    const data = randomBytes(300_000);
    await target.put('ranged', data);
    t.true((await target.getRange('ranged', 0, 10)).equals(data.subarray(0, 10)));
    t.true((await target.getRange('ranged', 123_456, 70_000)).equals(data.subarray(123_456, 193_456)));
    t.true((await target.getRange('ranged', 299_990, 10)).equals(data.subarray(299_990)));
  });

  run('listing thousands of keys by prefix', async (t, { target }) => {
    const n = options.listKeys ?? 2000;
    const keys: string[] = [];
    for (let i = 0; i < n; i++) {
      const hex = i.toString(16).padStart(4, '0');
      keys.push(i % 3 === 0 ? `chunks/${hex.slice(0, 2)}/${hex}` : i % 3 === 1 ? `chunksx/${hex}` : `other/${hex}.json`);
    }
    keys.push('chunk', 'top');
    await pool(keys, 16, (k) => target.put(k, Buffer.from(k)));
    const all = await collect(target.list(''));
    t.deepEqual(all, [...keys].sort(), 'list("") gives every key exactly once');
    t.deepEqual(await collect(target.list('chunks/')), keys.filter((k) => k.startsWith('chunks/')).sort());
    t.deepEqual(await collect(target.list('chunks')), keys.filter((k) => k.startsWith('chunks')).sort(), 'a prefix may end inside a segment');
    t.deepEqual(await collect(target.list('chunks/0')), keys.filter((k) => k.startsWith('chunks/0')).sort());
    t.deepEqual(await collect(target.list('nothing/')), []);
    t.deepEqual(await collect(target.list('top')), ['top']);
  });

  run('delete removes a key from get, head and list', async (t, { target }) => {
    await target.put('a/1', Buffer.from('1'));
    await target.put('a/2', Buffer.from('2'));
    await target.delete('a/1');
    t.is(await target.head('a/1'), null);
    await t.throwsAsync(() => target.get('a/1'), { instanceOf: NotFoundError });
    t.deepEqual(await collect(target.list('a/')), ['a/2']);
    await target.delete('a/1');
    t.pass();
  });

  run('concurrent puts to one key leave one whole value', async (t, { target }) => {
    const values = Array.from({ length: 8 }, (_, i) => Buffer.alloc(200_000 + i * 1000, i + 1));
    await Promise.all(values.map((v) => target.put('race', v)));
    const got = await target.get('race');
    t.true(values.some((v) => v.equals(got)), 'the value is one of those put, whole');
    t.deepEqual(await collect(target.list('')), ['race']);
  });

  run('invalid keys are refused', async (t, { target }) => {
    for (const key of ['../escape', '/absolute', 'a//b', 'a/../b', 'sp ace', 'a/', '']) {
      await t.throwsAsync(() => target.put(key, Buffer.from('x')), undefined, `put(${JSON.stringify(key)}) rejects`);
    }
    t.deepEqual(await collect(target.list('')), []);
  });

  run('a put that fails in the middle leaves the old value and no stray key', async (t, s) => {
    if (!s.interruptedPut) {
      t.log('this target cannot cause a real fault in a test; skipped');
      t.pass();
      return;
    }
    const old = Buffer.from('the old value');
    await s.target.put('victim', old);
    const error = await s.interruptedPut('victim', randomBytes(8 * 2 ** 20));
    t.truthy(error, 'the interrupted put rejected');
    const target = s.reopen ? await s.reopen() : s.target;
    const got = await target.get('victim').catch((e: unknown) => e);
    t.true(Buffer.isBuffer(got) && got.equals(old), 'the key still holds the old value');
    t.deepEqual(await collect(target.list('')), ['victim'], 'no partial or temporary key is listed');
    if (target !== s.target) await target.close?.();
  });
}
