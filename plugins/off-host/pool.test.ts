import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProxyClient } from './client.ts';
import { proxySpecSchema, type ProxySpec } from './options.ts';
import { ProxyPool, sees } from './pool.ts';
import { startProxy } from './server.ts';

const spec = (over: Partial<ProxySpec> & { name: string }): ProxySpec => proxySpecSchema.parse({ socket: '/nonexistent', ...over });

test('a proxy sees the volumes it lists, by name or glob', (t) => {
  const p = spec({ name: 'p', volumes: ['/srv/vm-*', 'C:\\ClusterStorage\\Volume?', 'exact.name'] });
  t.true(sees(p, '/srv/vm-a'));
  t.false(sees(p, '/srv/vmx'));
  t.true(sees(p, 'C:\\ClusterStorage\\Volume1'));
  t.false(sees(p, 'C:\\ClusterStorage\\Volume12'));
  t.true(sees(p, 'exact.name'));
  t.false(sees(p, 'exactxname'), 'a dot is not a wildcard');
  t.true(sees(spec({ name: 'all' }), 'anything'));
});

test('the proxy options refuse two ways to reach a proxy, a lone port, and duplicate names', (t) => {
  t.throws(() => proxySpecSchema.parse({ name: 'p', command: ['x'], socket: '/s' }), { message: /one way to reach the proxy, not command and socket/ });
  t.throws(() => proxySpecSchema.parse({ name: 'p', port: 1 }), { message: /host and port go together/ });
});

async function proxies(t: import('ava').ExecutionContext, names: string[]) {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-pool-'));
  const running = await Promise.all(names.map((name) => startProxy({ socket: join(dir, `${name}.sock`) }, { name, concurrency: 4, runner: async () => {} })));
  t.teardown(async () => { await Promise.all(running.map((r) => r.close())); await rm(dir, { recursive: true, force: true }); });
  return (name: string) => join(dir, `${name}.sock`);
}

test('acquire picks the least busy proxy that sees the volume, waits when all are full, and skips excluded ones', async (t) => {
  const socket = await proxies(t, ['p1', 'p2']);
  const connects: string[] = [];
  const pool = new ProxyPool(
    [spec({ name: 'p1', socket: socket('p1'), concurrency: 1, volumes: ['vol-?'] }), spec({ name: 'p2', socket: socket('p2'), concurrency: 2, volumes: ['vol-b', 'vol-a'] }), spec({ name: 'p3', socket: socket('p1'), volumes: ['data-c'] })],
    (s) => { connects.push(s.name); return ProxyClient.connect({ socket: s.socket! }, { name: s.name }); },
  );
  t.teardown(() => pool.close());
  t.deepEqual(pool.candidates('vol-a').map((s) => s.name), ['p1', 'p2']);
  t.regex(pool.whyNot('data9')!, /no configured proxy sees volume "data9" \(proxies: p1 sees vol-\?; p2 sees vol-b, vol-a; p3 sees data-c\)/);
  t.is(pool.whyNot('vol-a'), undefined);

  const a = await pool.acquire('vol-a');
  const b = await pool.acquire('vol-a');
  const c = await pool.acquire('vol-a');
  t.deepEqual([a.spec.name, b.spec.name, c.spec.name].sort(), ['p1', 'p2', 'p2'], 'p1 holds 1, p2 holds 2');
  t.is(a.client.welcome?.proxy, a.spec.name);
  let fourth: string | undefined;
  const waiting = pool.acquire('vol-a').then((l) => { fourth = l.spec.name; return l; });
  await new Promise((r) => setTimeout(r, 30));
  t.is(fourth, undefined, 'every slot is taken: the fourth VM waits');
  const p1 = [a, b, c].find((l) => l.spec.name === 'p1')!;
  p1.release();
  p1.release(); // releasing twice frees one slot only
  t.is((await waiting).spec.name, 'p1');
  t.deepEqual(connects.sort(), ['p1', 'p2'], 'one connection per proxy, shared by its VMs');

  (await waiting).release();
  const other = await pool.acquire('vol-b', new Set(['p2']));
  t.is(other.spec.name, 'p1', 'p2 was tried for this VM already');
  other.release();
  await t.throwsAsync(pool.acquire('data-c', new Set(['p3']), 'VM web'), { message: /VM web: no proxy left to read volume "data-c" \(tried: p3\)/ });
});

test('a proxy that cannot be reached is down for the job; the next one serves', async (t) => {
  const socket = await proxies(t, ['good']);
  const pool = new ProxyPool(
    [spec({ name: 'dead', socket: join(tmpdir(), 'stillpoint-no-such.sock') }), spec({ name: 'good', socket: socket('good') })],
    (s) => ProxyClient.connect({ socket: s.socket! }, { name: s.name, connectTimeoutMs: 2000 }),
  );
  t.teardown(() => pool.close());
  const lease = await pool.acquire('v');
  t.is(lease.spec.name, 'good');
  lease.release();
  const again = await pool.acquire('v');
  t.is(again.spec.name, 'good');
  again.release();
  const only = new ProxyPool([spec({ name: 'dead', socket: join(tmpdir(), 'stillpoint-no-such.sock') })], (s) => ProxyClient.connect({ socket: s.socket! }, { name: s.name }));
  await t.throwsAsync(only.acquire('v'), { message: /every proxy that sees volume "v" is down \(dead: .*lost the proxy/ });
});
