import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NotFoundError, TransientError } from '../../core/errors.ts';
import { ProxyClient, ProxyLostError, ProxyTaskError } from './client.ts';
import { startProxy } from './server.ts';
import type { TaskRunner } from './session.ts';
import type { TaskMessage } from './protocol.ts';

/**
 * A task runner for the session tests: it really reads each disk's file and reports its SHA-256 as
 * the record (the real runner, which stores into a repository, is tested end to end in test/off-host).
 */
const hashRunner = (log: string[] = []): TaskRunner => async (task, report, signal) => {
  for (const disk of task.disks) {
    log.push(`start ${task.id} ${disk.diskId}`);
    if (disk.path.endsWith('.transient')) throw new TransientError('storage dropped the connection', { where: `VM ${task.vm.name}` });
    if (disk.path.endsWith('.wait')) {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, Number(disk.path.split('.').at(-2)) || 0);
        signal.addEventListener('abort', () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
      });
      log.push(`end ${task.id} ${disk.diskId}`);
      report.disk(disk, { record: { waited: true }, bytesRead: 0, bytesStored: 0, durationMs: 0 });
      continue;
    }
    const started = Date.now();
    let data: Buffer;
    try {
      data = await readFile(disk.path);
    } catch (error) {
      throw new NotFoundError(`cannot read ${disk.path}: ${(error as Error).message}`, { where: `VM ${task.vm.name}, disk ${disk.diskId}` });
    }
    report.progress(disk, { bytesRead: data.length, bytesStored: 0, totalBytes: data.length });
    report.disk(disk, { record: { sha256: createHash('sha256').update(data).digest('hex'), size: data.length }, bytesRead: data.length, bytesStored: data.length, durationMs: Date.now() - started });
    log.push(`end ${task.id} ${disk.diskId}`);
  }
};

function task(id: string, paths: string[]): Omit<TaskMessage, 'type'> {
  return {
    id, vm: { id: `vm-${id}`, name: `vm ${id}` }, restorePoint: {}, repository: { config: { storage: { type: 'local' } } },
    disks: paths.map((path, i) => ({ diskId: `disk${i}`, path, parentPaths: [], virtualSize: 0 })),
  };
}

async function setup(t: import('ava').ExecutionContext, options: { concurrency?: number; token?: string; log?: string[] } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-proxy-'));
  const socket = join(dir, 'proxy.sock');
  const proxy = await startProxy({ socket }, { name: 'p1', concurrency: options.concurrency ?? 2, runner: hashRunner(options.log), token: options.token, progressIntervalMs: 0 });
  t.teardown(async () => { await proxy.close(); await rm(dir, { recursive: true, force: true }); });
  return { dir, socket, proxy };
}

test('a task reads each disk on the proxy and returns each disk record', async (t) => {
  const { dir, socket } = await setup(t);
  await writeFile(join(dir, 'a.vhdx'), 'alpha');
  await writeFile(join(dir, 'b.vhdx'), Buffer.alloc(100_000, 3));
  const client = await ProxyClient.connect({ socket }, { name: 'p1' });
  t.is(client.welcome?.proxy, 'p1');
  t.is(client.welcome?.concurrency, 2);
  const progress: string[] = [];
  const disks = await client.runTask(task('t1', [join(dir, 'a.vhdx'), join(dir, 'b.vhdx')]), { onProgress: (p) => progress.push(`${p.diskId}:${p.bytesRead}`) });
  t.deepEqual(disks.map((d) => d.diskId), ['disk0', 'disk1']);
  t.deepEqual(disks[0].record, { sha256: createHash('sha256').update('alpha').digest('hex'), size: 5 });
  t.is(disks[1].bytesRead, 100_000);
  t.deepEqual(progress, ['disk0:5', 'disk1:100000']);
  await client.close();
  t.false(client.alive);
});

test('failures come back with their class and the proxy named; transient ones are marked retryable', async (t) => {
  const { dir, socket } = await setup(t);
  const client = await ProxyClient.connect({ socket }, { name: 'p1' });
  const missing = await t.throwsAsync(client.runTask(task('t1', [join(dir, 'nope.vhdx')])), { instanceOf: NotFoundError });
  t.regex(missing!.message, /^proxy "p1": VM vm t1, disk disk0: cannot read .*nope\.vhdx/);
  await t.throwsAsync(client.runTask(task('t2', [join(dir, 'x.transient')])), { instanceOf: TransientError, message: /storage dropped/ });
  // the session goes on after failures
  await writeFile(join(dir, 'ok.vhdx'), 'ok');
  t.is((await client.runTask(task('t3', [join(dir, 'ok.vhdx')]))).length, 1);
  await client.close();
});

test('the proxy runs at most `concurrency` tasks at once and queues the rest', async (t) => {
  const log: string[] = [];
  const { socket } = await setup(t, { concurrency: 1, log });
  const client = await ProxyClient.connect({ socket }, { name: 'p1' });
  await Promise.all([client.runTask(task('a', ['/x.50.wait'])), client.runTask(task('b', ['/x.10.wait']))]);
  t.deepEqual(log, ['start a disk0', 'end a disk0', 'start b disk0', 'end b disk0']);
  await client.close();
});

test('an aborted task is cancelled on the proxy; a queued one never starts', async (t) => {
  const log: string[] = [];
  const { socket } = await setup(t, { concurrency: 1, log });
  const client = await ProxyClient.connect({ socket }, { name: 'p1' });
  const running = new AbortController();
  const queued = new AbortController();
  const a = client.runTask(task('a', ['/x.60000.wait']), { signal: running.signal });
  const b = client.runTask(task('b', ['/x.60000.wait']), { signal: queued.signal });
  await new Promise((r) => setTimeout(r, 50));
  queued.abort(new Error('user pressed ^C'));
  running.abort(new Error('job cancelled'));
  const ea = await t.throwsAsync(a, { instanceOf: ProxyTaskError });
  t.is((ea as ProxyTaskError).remote.name, 'Cancelled');
  t.false((ea as ProxyTaskError).retryable);
  t.regex(ea!.message, /job cancelled/);
  await t.throwsAsync(b, { message: /user pressed \^C/ });
  t.deepEqual(log, ['start a disk0']);
  await client.close();
});

test('a wrong or missing token is refused with what to do', async (t) => {
  const { socket } = await setup(t, { token: 's3cret' });
  await t.throwsAsync(ProxyClient.connect({ socket }, { name: 'p1' }), { message: /proxy "p1": the proxy refused a message: the token in "hello" is missing or wrong.*tokenFile/ });
  await t.throwsAsync(ProxyClient.connect({ socket }, { name: 'p1', token: 'guess' }), { message: /token .* wrong/ });
  const client = await ProxyClient.connect({ socket }, { name: 'p1', token: 's3cret' });
  t.is(client.welcome?.proxy, 'p1');
  await client.close();
});

test('raw protocol: a message before hello, a bad message and an unknown task each get an error line', async (t) => {
  const { socket } = await setup(t);
  const conn = connect(socket);
  const lines: string[] = [];
  let buffered = '';
  conn.on('data', (d) => { buffered += d.toString(); const parts = buffered.split('\n'); buffered = parts.pop()!; lines.push(...parts); });
  const waitFor = async (n: number) => { while (lines.length < n) await new Promise((r) => setTimeout(r, 5)); };
  conn.write('{"type":"ping","seq":1}\n');
  await waitFor(1);
  t.regex(lines[0], /"type":"error".*expected \\"hello\\" first, got \\"ping\\"/);
  conn.write('{"type":"hello","protocol":1,"client":"raw"}\n');
  await waitFor(2);
  t.regex(lines[1], /"type":"welcome"/);
  conn.write('not json\n{"type":"cancel","id":"zz"}\n{"type":"ping","seq":7}\n');
  await waitFor(5);
  t.regex(lines[2], /not JSON/);
  t.regex(lines[3], /"id":"zz".*no task \\"zz\\" to cancel/);
  t.deepEqual(JSON.parse(lines[4]), { type: 'pong', seq: 7 });
  conn.end();
});

test('a protocol version the proxy does not speak is refused', async (t) => {
  const { socket } = await setup(t);
  const conn = connect(socket);
  const reply = await new Promise<string>((resolve) => {
    conn.on('data', (d) => resolve(d.toString()));
    conn.write('{"type":"hello","protocol":99,"client":"future"}\n');
  });
  t.regex(reply, /protocol version 99 is not supported; this proxy speaks 1.*same Stillpoint version/);
  conn.destroy();
});

test('when the coordinator goes away, the proxy aborts its tasks', async (t) => {
  const log: string[] = [];
  const { socket, proxy } = await setup(t, { log });
  const client = await ProxyClient.connect({ socket }, { name: 'p1' });
  const running = client.runTask(task('a', ['/x.60000.wait']));
  await new Promise((r) => setTimeout(r, 50));
  client.kill();
  await t.throwsAsync(running, { instanceOf: ProxyLostError, message: /lost the proxy: the connection was ended/ });
  await proxy.close(); // resolves only once the session's task has settled
  t.deepEqual(log, ['start a disk0']);
});
