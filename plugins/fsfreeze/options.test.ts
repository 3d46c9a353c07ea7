import test from 'ava';
import { optionsSchema } from './options.ts';

const problems = (input: unknown) => {
  const result = optionsSchema.safeParse(input);
  return result.success ? [] : result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

test('a guest with mount points and a local channel is accepted with defaults', (t) => {
  const options = optionsSchema.parse({ guests: { web01: { channel: { type: 'local' }, mountPoints: ['/data'] } } });
  t.is(options.guests.web01.freezeAll, false);
  t.is(options.deadlineMs, undefined);
});

test('freezeAll is refused without an explicit deadline', (t) => {
  t.deepEqual(problems({ guests: { web01: { channel: { type: 'local' }, freezeAll: true } } }), [
    'guests.web01.deadlineMs: freezeAll freezes every writable filesystem of the guest (root included); it is refused without an explicit deadlineMs',
  ]);
  t.deepEqual(problems({ guests: { web01: { channel: { type: 'local' }, freezeAll: true, deadlineMs: 5000 } } }), []);
  t.deepEqual(problems({ deadlineMs: 5000, guests: { web01: { channel: { type: 'local' }, freezeAll: true } } }), []);
});

test('a guest must say what to freeze, and not both ways', (t) => {
  t.regex(problems({ guests: { a: { channel: { type: 'local' } } } })[0], /^guests\.a\.mountPoints: say what to freeze/);
  t.regex(problems({ guests: { a: { channel: { type: 'local' }, mountPoints: ['/x'], freezeAll: true, deadlineMs: 1 } } })[0], /either mountPoints or freezeAll/);
  t.regex(problems({ guests: { a: { channel: { type: 'local' }, mountPoints: ['data'] } } })[0], /mountPoints\.0: must be an absolute path/);
});

test('ssh needs a key source (not the key) and a host key check', (t) => {
  const ssh = { type: 'ssh', host: 'g', user: 'root' };
  const found = problems({ guests: { a: { channel: ssh, mountPoints: ['/x'] } } });
  t.true(found.some((p) => p.startsWith('guests.a.channel.keyFile: set exactly one of keyFile or keyEnv')));
  t.true(found.some((p) => p.startsWith('guests.a.channel.knownHostsFile: set knownHostsFile or fingerprint')));
  t.true(problems({ guests: { a: { channel: { ...ssh, keyEnv: 'K', privateKey: 'PEM', fingerprint: 'SHA256:x' }, mountPoints: ['/x'] } } }).some((p) => /privateKey|Unrecognized/.test(p)));
  t.deepEqual(problems({ guests: { a: { channel: { ...ssh, keyEnv: 'K', knownHostsFile: 'kh' }, mountPoints: ['/x'] } } }), []);
});
