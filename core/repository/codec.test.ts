import { randomBytes } from 'node:crypto';
import test from 'ava';
import { CorruptImageError } from '../errors.ts';
import { BlobCodec, chunkId, isAllZero } from './codec.ts';

const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };

test('seal/open round trip, compressed and not, encrypted and not', (t) => {
  for (const k of [null, keys]) {
    const codec = new BlobCodec({ keys: k, compressionLevel: 3 });
    for (const data of [Buffer.alloc(0), Buffer.alloc(100_000, 'abc'), randomBytes(70_000)]) {
      const blob = codec.seal('chunks/aa/x', data);
      t.true(codec.open('chunks/aa/x', blob).equals(data));
    }
  }
});

test('a tampered, renamed or foreign blob is refused as corrupt', (t) => {
  const codec = new BlobCodec({ keys, compressionLevel: 3 });
  const blob = codec.seal('chunks/aa/x', Buffer.alloc(5000, 7));
  const bad = Buffer.from(blob);
  bad[bad.length - 20] ^= 1;
  t.throws(() => codec.open('chunks/aa/x', bad), { instanceOf: CorruptImageError, message: /chunks\/aa\/x.*fails authentication/ });
  t.throws(() => codec.open('chunks/bb/y', blob), { instanceOf: CorruptImageError }, 'a blob moved to another name');
  const other = new BlobCodec({ keys: { encKey: randomBytes(32), idKey: randomBytes(32) }, compressionLevel: 3 });
  t.throws(() => other.open('chunks/aa/x', blob), { instanceOf: CorruptImageError });
  t.throws(() => codec.open('x', Buffer.from('nonsense')), { instanceOf: CorruptImageError, message: /bad magic/ });
});

test('chunk ids: SHA-256 without keys, keyed HMAC with them', (t) => {
  const data = Buffer.from('hello');
  t.is(chunkId(data, null), '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
  t.not(chunkId(data, keys), chunkId(data, null));
});

test('isAllZero', (t) => {
  t.true(isAllZero(Buffer.alloc(4099)));
  const b = Buffer.alloc(4099);
  b[4098] = 1;
  t.false(isAllZero(b));
  t.false(isAllZero(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 1])));
  t.true(isAllZero(Buffer.alloc(16).subarray(3)));
});
