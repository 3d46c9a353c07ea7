import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync, mkdirSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { storageTargetKit } from '../../core/testing/storage-kit.ts';
import { StillpointError } from '../../core/errors.ts';
import { openRepository, RawFileDisk, repositoryConfigSchema } from '../../core/repository/index.ts';
import { sshdAvailable, startSshd, type TestSshd } from '../../test/repository/sshd.ts';
import { checkKnownHosts, createSftpStorage, fingerprint, SftpStorage } from './index.ts';

const why = sshdAvailable();
if (why && process.env.CI === 'true') throw new Error(`the SFTP tests must run under CI: ${why}`);

let sshd: TestSshd | null = null;
test.before(async () => {
  if (!why) sshd = await startSshd();
});
test.after.always(async () => {
  await sshd?.stop();
});

function target(s: TestSshd, sub: string, extra: Partial<ConstructorParameters<typeof SftpStorage>[0]> = {}): SftpStorage {
  return new SftpStorage({
    host: '127.0.0.1',
    port: s.port,
    username: s.user,
    path: join(s.root, sub),
    privateKey: s.clientKey,
    knownHosts: `${s.hostKeyLine}\n`,
    connectTimeoutMs: 10_000,
    operationTimeoutMs: 30_000,
    ...extra,
  });
}

let n = 0;
storageTargetKit(test, {
  name: 'sftp',
  async setup() {
    if (!sshd) throw new Error(`no sshd: ${why}`);
    const s = sshd;
    const sub = `kit-${++n}`;
    const store = target(s, sub);
    return {
      target: store,
      // A real fault: the server's session process dies while the upload runs.
      async interruptedPut(key, data) {
        const put = store.put(key, data).then(() => null, (e: unknown) => e);
        // Wait until the temporary file is being written, then kill the connection's sshd process.
        const dir = join(s.root, sub);
        const deadline = Date.now() + 5000;
        while (Date.now() < deadline && !readdirSync(dir).some((f) => f.includes('~tmp~'))) await new Promise((r) => setImmediate(r));
        for (const pid of s.sessionPids()) process.kill(pid, 'SIGKILL');
        return put;
      },
      async teardown() {
        await store.close();
        rmSync(join(s.root, sub), { recursive: true, force: true });
      },
    };
  },
  listKeys: 2000,
});

test.serial('sftp: an unknown host key is refused', async (t) => {
  if (!sshd) return void (t.log(why), t.pass());
  const other = execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(sshd.dir, 'other'), '-C', 'x']) && join(sshd.dir, 'other.pub');
  const line = (await import('node:fs')).readFileSync(other, 'utf8').trim().split(/\s+/);
  // known_hosts lists another host only: unknown.
  const unknown = target(sshd, 'refused', { knownHosts: `otherhost ${line[0]} ${line[1]}\n` });
  await t.throwsAsync(() => unknown.put('x', Buffer.from('x')), { instanceOf: StillpointError, message: /host key SHA256:\S+ is unknown.*\[127\.0\.0\.1\]:\d+ is not in known_hosts/ });
  // known_hosts lists this host with another key: changed.
  const changed = target(sshd, 'refused', { knownHosts: `[127.0.0.1]:${sshd.port} ${line[0]} ${line[1]}\n` });
  await t.throwsAsync(() => changed.head('x'), { instanceOf: StillpointError, message: /host key CHANGED/ });
  // A wrong fingerprint.
  const wrongFp = target(sshd, 'refused', { knownHosts: undefined, fingerprints: ['SHA256:' + 'A'.repeat(43)] });
  await t.throwsAsync(() => wrongFp.head('x'), { message: /does not match the configured fingerprint/ });
  // The right fingerprint.
  await Promise.all([unknown.close(), changed.close(), wrongFp.close()]);
  const rightFp = target(sshd, 'fp', { knownHosts: undefined, fingerprints: [sshd.hostKeyFingerprint] });
  t.is(await rightFp.head('x'), null);
  await rightFp.close();
  t.throws(() => target(sshd!, 'x', { knownHosts: undefined, fingerprints: [] }), { message: /knownHostsFile or hostKeyFingerprint/ });
});

test.serial('sftp: hashed known_hosts entries work; bad credentials fail clearly', async (t) => {
  if (!sshd) return void (t.log(why), t.pass());
  const kh = join(sshd.dir, 'known_hosts');
  writeFileSync(kh, `${sshd.hostKeyLine}\n`);
  execFileSync('ssh-keygen', ['-H', '-f', kh], { stdio: 'ignore' });
  const text = (await import('node:fs')).readFileSync(kh, 'utf8');
  t.true(text.startsWith('|1|'), 'the entry is hashed');
  const store = target(sshd, 'hashed', { knownHosts: text });
  await store.put('a/b', Buffer.from('hello'));
  t.is((await store.get('a/b')).toString(), 'hello');
  t.is(statSync(join(sshd.root, 'hashed', 'a', 'b')).mode & 0o777, 0o600, 'files are created readable by their owner only');
  await store.close();
  const badKey = execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(sshd.dir, 'bad'), '-C', 'x']) && (await import('node:fs')).readFileSync(join(sshd.dir, 'bad'), 'utf8');
  const bad = target(sshd!, 'x', { privateKey: badKey });
  await t.throwsAsync(() => bad.head('x'), { message: /authentication as \S+ failed/ });
  await bad.close();
});

test.serial('sftp plugin options: secrets from files or the environment, known_hosts from a file', async (t) => {
  if (!sshd) return void (t.log(why), t.pass());
  const keyFile = join(sshd.dir, 'client_key');
  const kh = join(sshd.dir, 'kh-plain');
  writeFileSync(kh, `${sshd.hostKeyLine}\n`);
  const viaFile = await createSftpStorage({ host: '127.0.0.1', port: sshd.port, username: sshd.user, path: join(sshd.root, 'opts'), privateKeyFile: keyFile, knownHostsFile: kh }, { configDir: '/' });
  await viaFile.put('k', Buffer.from('1'));
  await viaFile.close();
  const viaEnv = await createSftpStorage({ host: '127.0.0.1', port: sshd.port, username: sshd.user, path: join(sshd.root, 'opts'), privateKeyEnv: 'SP_KEY', hostKeyFingerprint: sshd.hostKeyFingerprint }, { configDir: '/', env: { SP_KEY: sshd.clientKey } });
  t.is((await viaEnv.get('k')).toString(), '1');
  await viaEnv.close();
  await t.throwsAsync(() => createSftpStorage({ host: 'h', username: 'u', path: '/r', privateKeyEnv: 'NOPE', hostKeyFingerprint: sshd!.hostKeyFingerprint }, { configDir: '/', env: {} }), { message: /environment variable NOPE/ });
  await t.throwsAsync(() => createSftpStorage({ host: 'h', username: 'u', path: '/r', password: 'clear' }, { configDir: '/' }), { message: /password.*Unrecognized key|Unrecognized key.*password/s });
});

test.serial('sftp: a backup to a repository over SFTP survives a dropped connection and restores', async (t) => {
  if (!sshd) return void (t.log(why), t.pass());
  const s = sshd;
  const store = target(s, 'repo');
  const config = repositoryConfigSchema.parse({ storage: { type: 'sftp', options: {} }, chunkSize: 256 * 1024 });
  const repo = await openRepository(store, config, { create: true, passphrase: 'pw', scrypt: { N: 1024, r: 8, p: 1 }, workers: 2, retry: { retries: 5, baseDelayMs: 20, maxDelayMs: 200 } });
  const work = join(s.dir, 'work');
  mkdirSync(work, { recursive: true });
  const data = randomBytes(6 * 2 ** 20);
  writeFileSync(join(work, 'd.img'), data);
  const writer = await repo.startRestorePoint({ job: 'j', vm: { id: 'v', name: 'v', driver: 'lab' }, consistency: { method: 'online', level: 'application', reason: 'ok' }, time: new Date().toISOString() });
  const src = await RawFileDisk.open(join(work, 'd.img'));
  let killed = false;
  await writer.storeDisk({ id: 'd', virtualSize: data.length, logicalSectorSize: 512 }, src, {
    onProgress: (p) => {
      if (!killed && p.bytesStored > 2 * 2 ** 20) {
        killed = true;
        for (const pid of s.sessionPids()) process.kill(pid, 'SIGKILL');
      }
    },
  });
  await src.close();
  t.true(killed, 'the connection was dropped in the middle of the backup');
  const { id } = await writer.commit();
  await repo.restoreDisk(id, 'd', join(work, 'out.img'));
  t.true((await import('node:fs')).readFileSync(join(work, 'out.img')).equals(data));
  t.true((await repo.verify({ deep: true })).ok);
  await repo.close();
});

test('known_hosts parsing: patterns, negation, revoked', (t) => {
  const key = Buffer.from('key-one');
  const other = Buffer.from('key-two');
  const b = (k: Buffer) => k.toString('base64');
  t.deepEqual(checkKnownHosts(`*.example.org ssh-ed25519 ${b(key)}\n`, 'a.example.org', 22, key), { ok: true });
  t.deepEqual(checkKnownHosts(`*.example.org,!bad.example.org ssh-ed25519 ${b(key)}\n`, 'bad.example.org', 22, key), { ok: false, reason: 'unknown' });
  t.deepEqual(checkKnownHosts(`h ssh-ed25519 ${b(other)}\n`, 'h', 22, key), { ok: false, reason: 'changed' });
  t.deepEqual(checkKnownHosts(`@revoked h ssh-ed25519 ${b(key)}\nh ssh-ed25519 ${b(key)}\n`, 'h', 22, key), { ok: false, reason: 'revoked' });
  t.deepEqual(checkKnownHosts(`h ssh-ed25519 ${b(key)}\n`, 'h', 2222, key), { ok: false, reason: 'unknown' }, 'another port is another host');
  t.regex(fingerprint(key), /^SHA256:[A-Za-z0-9+/]{43}$/);
});
