import test from 'ava';
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { checkKnownHosts, fingerprintOf, hostMatches, keyTypeOf, parseKnownHosts } from './known-hosts.ts';

/** An ssh-ed25519 public key blob (RFC 8709 wire format) of a fresh key. */
function ed25519Blob(): Buffer {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const name = Buffer.from('ssh-ed25519');
  const len = (n: number) => Buffer.from([0, 0, 0, n]);
  return Buffer.concat([len(name.length), name, len(raw.length), raw]);
}

test('fingerprintOf matches the ssh-keygen format', (t) => {
  const blob = ed25519Blob();
  t.regex(fingerprintOf(blob), /^SHA256:[A-Za-z0-9+/]{43}$/);
  t.is(keyTypeOf(blob), 'ssh-ed25519');
});

test('hostMatches: plain, [host]:port, wildcards, negation, hashed', (t) => {
  t.true(hostMatches('web01,10.0.0.5', '10.0.0.5', 22));
  t.false(hostMatches('10.0.0.5', '10.0.0.5', 2222));
  t.true(hostMatches('[10.0.0.5]:2222', '10.0.0.5', 2222));
  t.true(hostMatches('*.lab,!bad.lab', 'web.lab', 22));
  t.false(hostMatches('*.lab,!bad.lab', 'bad.lab', 22));
  const salt = Buffer.from('0123456789abcdef0123');
  const hash = createHmac('sha1', salt).update('[127.0.0.1]:4022').digest('base64');
  t.true(hostMatches(`|1|${salt.toString('base64')}|${hash}`, '127.0.0.1', 4022));
  t.false(hostMatches(`|1|${salt.toString('base64')}|${hash}`, '127.0.0.1', 22));
});

test('checkKnownHosts: known, unknown, changed and revoked keys', (t) => {
  const good = ed25519Blob();
  const other = ed25519Blob();
  const entries = parseKnownHosts(
    ['# comment', `[127.0.0.1]:4022 ssh-ed25519 ${good.toString('base64')} test`, `@revoked * ssh-ed25519 ${other.toString('base64')}`].join('\n'),
  );
  t.deepEqual(checkKnownHosts(entries, '127.0.0.1', 4022, good), { ok: true });
  t.like(checkKnownHosts(entries, '127.0.0.1', 4022, other), { ok: false, problem: 'revoked' });
  t.like(checkKnownHosts(entries, '127.0.0.1', 4022, ed25519Blob()), { ok: false, problem: 'changed' });
  t.like(checkKnownHosts(entries, '127.0.0.2', 4022, good), { ok: false, problem: 'unknown' });
});
