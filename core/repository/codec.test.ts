import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { CorruptImageError } from '../errors.ts';
import { nativeGcm, type NativeGcm } from '../util/gcm.ts';
import { BlobCodec, chunkNamer, isAllZero, SEAL_OVERHEAD } from './codec.ts';
import { CHUNK_HASHES } from './format.ts';

const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };

/** The native AES-256-GCM; without it the test passes with a note, except under CI, where it must be there. */
function nativeOrSkip(t: ExecutionContext): NativeGcm | null {
  const gcm = nativeGcm();
  if (gcm) return gcm;
  if (process.env.CI === 'true') t.fail('the native library (core/native) is not built or has no AES-256-GCM here');
  else t.log('skipped: core/native is not built (npm run build:native) or this OpenSSL has no AES-256-GCM');
  t.pass();
  return null;
}

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

test('chunk names: each hash matches its published test vector, keyed ones need and use the id key', (t) => {
  // SHA-256 ("hello"); BLAKE3's official test vectors (input of length 0, key "whats the Elvish word for friend").
  const elvish = { encKey: randomBytes(32), idKey: Buffer.from('whats the Elvish word for friend') };
  t.is(chunkNamer('sha256', null)(Buffer.from('hello')), '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
  t.is(chunkNamer('blake3', null)(Buffer.alloc(0)), 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262');
  const keyed = chunkNamer('blake3-keyed', elvish);
  t.is(keyed(Buffer.from('a first chunk')), chunkNamer('blake3-keyed', elvish)(Buffer.from('a first chunk')));
  t.is(keyed(Buffer.alloc(0)), '92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26', 'a namer\'s second chunk is named afresh, with its key');
  const data = randomBytes(1000);
  const names = CHUNK_HASHES.map((h) => chunkNamer(h, keys)(data));
  t.is(new Set(names).size, CHUNK_HASHES.length, 'four hashes, four names');
  t.not(chunkNamer('hmac-sha256', keys)(data), chunkNamer('hmac-sha256', elvish)(data));
  // A view into a larger buffer (as the workers hash a chunk in its buffer) is hashed as its bytes only.
  const big = randomBytes(5000);
  const view = new Uint8Array(big.buffer, big.byteOffset + 100, 3000);
  for (const h of CHUNK_HASHES) t.is(chunkNamer(h, keys)(view), chunkNamer(h, keys)(Buffer.from(view)), `${h} of a view`);
  t.throws(() => chunkNamer('blake3-keyed', null), { message: /needs the repository's keys/ });
  t.throws(() => chunkNamer('hmac-sha256', null), { message: /needs the repository's keys/ });
});

test('BLAKE3 chunk names of whole chunks agree with b3sum (Debian), keyed and not', (t) => {
  if (spawnSync('b3sum', ['--version'], { stdio: 'ignore' }).status !== 0) {
    if (process.env.CI === 'true') t.fail('b3sum is not installed (Debian b3sum; scripts/install-system-deps.sh); CI must run this test');
    else t.log('skipped: b3sum is not installed (Debian b3sum; scripts/install-system-deps.sh)');
    t.pass();
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'stillpoint-b3-'));
  try {
    // Sizes across BLAKE3's 1 KiB chunks and its SIMD batches, up to a default repository chunk.
    for (const size of [1, 1024, 1025, 64 * 1024 + 7, 256 * 1024]) {
      const data = randomBytes(size);
      const file = join(dir, `chunk-${size}`);
      writeFileSync(file, data);
      const b3sum = (args: string[], input?: Buffer) => spawnSync('b3sum', [...args, '--no-names', file], { input, encoding: 'utf8' }).stdout.trim();
      t.is(chunkNamer('blake3', null)(data), b3sum([]), `${size} bytes`);
      t.is(chunkNamer('blake3-keyed', keys)(data), b3sum(['--keyed'], keys.idKey), `${size} bytes, keyed`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isAllZero', (t) => {
  t.true(isAllZero(Buffer.alloc(4099)));
  const b = Buffer.alloc(4099);
  b[4098] = 1;
  t.false(isAllZero(b));
  t.false(isAllZero(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 1])));
  t.true(isAllZero(Buffer.alloc(16).subarray(3)));
});

test('AES-GCM through the native library and through node:crypto make the same blobs: each opens the other\'s, in place and into buffers', (t) => {
  if (!nativeOrSkip(t)) return;
  const native = new BlobCodec({ keys, compressionLevel: 1 });
  const node = new BlobCodec({ keys, compressionLevel: 1, nativeCrypto: false });
  for (const data of [Buffer.alloc(0), Buffer.from('x'), Buffer.alloc(100_000, 'text '), randomBytes(300_000)]) {
    for (const [seal, open] of [[native, node], [node, native], [native, native]]) {
      t.true(open.open('chunks/aa/x', seal.seal('chunks/aa/x', data)).equals(data));
      // Sealed over the chunk in its own buffer (as the workers do), opened into a buffer of ours.
      const own = Buffer.alloc(data.length + SEAL_OVERHEAD);
      data.copy(own);
      const blob = Buffer.from(seal.seal('chunks/aa/x', own.subarray(0, data.length), own));
      const into = Buffer.alloc(data.length + 10);
      const plain = open.open('chunks/aa/x', blob, into);
      t.true(plain.equals(data));
      if (data.length > 0) t.is(plain.buffer, into.buffer, 'the plaintext is written into the buffer given');
    }
  }
  const blob = native.seal('chunks/aa/x', randomBytes(5000));
  const bad = Buffer.from(blob);
  bad[bad.length - 20] ^= 1;
  t.throws(() => native.open('chunks/aa/x', bad), { instanceOf: CorruptImageError, message: /chunks\/aa\/x.*fails authentication/ });
  t.throws(() => native.open('chunks/bb/y', blob), { instanceOf: CorruptImageError, message: /fails authentication/ }, 'a blob moved to another name');
  bad[bad.length - 20] ^= 1;
  bad[bad.length - 1] ^= 1;
  t.throws(() => native.open('chunks/aa/x', bad), { instanceOf: CorruptImageError, message: /fails authentication/ }, 'a damaged tag');
});

test('native AES-256-GCM gives the GCM specification\'s test case 16', (t) => {
  const gcm = nativeOrSkip(t);
  if (!gcm) return;
  const hex = (s: string) => Buffer.from(s, 'hex');
  const params = Buffer.concat([hex('feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308'), hex('cafebabefacedbaddecaf888'), hex('feedfacedeadbeeffeedfacedeadbeefabaddad2')]);
  const plain = hex('d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39');
  const out = Buffer.alloc(plain.length + 16);
  gcm.seal(params, plain, 0, out, 0, plain.length);
  t.is(out.subarray(0, plain.length).toString('hex'), '522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662');
  t.is(out.subarray(plain.length).toString('hex'), '76fc6ece0f4e1768cddf8853bb2d551b');
  const back = Buffer.alloc(plain.length);
  t.true(gcm.open(params, out, 0, back, 0, plain.length));
  t.true(back.equals(plain));
  out[3] ^= 1;
  t.false(gcm.open(params, out, 0, back, 0, plain.length));
  t.throws(() => gcm.seal(params.subarray(0, 40), plain, 0, out, 0, plain.length), { message: /a key and a nonce take 44/ });
  t.throws(() => gcm.seal(params, plain, 0, out, 10, plain.length), { message: /does not fit/ });
});
