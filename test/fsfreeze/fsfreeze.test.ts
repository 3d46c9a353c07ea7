/**
 * fsfreeze on real filesystems that the tests create (loop-mounted ext4, xfs, btrfs, and a tmpfs
 * that cannot be frozen), through the three channels: local, SSH (a real OpenSSH server on
 * loopback) and the QEMU guest agent (Debian's qemu-ga on a unix socket).
 *
 * Only mounts created here are ever frozen. Every mount is thawed and removed in after.always.
 * The tests run serially: qemu-ga's thaw is guest-wide, and the timings should not compete.
 */
import test from 'ava';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Engine } from '../../core/engine/engine.ts';
import type { Quiescer } from '../../core/contracts/quiescer.ts';
import fsfreeze, { FreezeFailedError, SshHostKeyError } from '../../plugins/fsfreeze/index.ts';
import { QgaConnection } from '../../plugins/fsfreeze/qga-client.ts';
import {
  IN_CI,
  createLoopMount,
  createTmpfsMount,
  endsWithin,
  linuxVm,
  makeWorkDir,
  removeMount,
  removeWorkDir,
  rootSkipReason,
  sleep,
  startFreezeChild,
  startWriter,
  type FreezeChild,
  type TestMount,
} from './helpers.ts';
import { startGuestAgent, startSshd, type GuestAgent, type Sshd } from './servers.ts';

const PROGRAMS = ['fsfreeze', 'losetup', 'mount', 'mkfs.ext4', 'mkfs.xfs', 'mkfs.btrfs', 'sshd', 'ssh-keygen', 'qemu-ga', 'setsid'];
const skipReason = await rootSkipReason(PROGRAMS);

interface Fixture {
  dir: string;
  ext4: TestMount;
  xfs: TestMount;
  btrfs: TestMount;
  tmpfs: TestMount;
  sshd?: Sshd;
  agent?: GuestAgent;
  children: FreezeChild[];
}
let fx: Fixture;

/** The quiescer as Stillpoint gets it: plugin options parsed by its schema, applied, resolved by hook. */
async function quiescerFor(options: unknown, vmName = 'guest1'): Promise<Quiescer> {
  const engine = new Engine();
  const plugin = fsfreeze(fsfreeze.optionsSchema.parse(options), { configDir: fx.dir, stateDir: path.join(fx.dir, 'state') });
  await plugin.apply(engine);
  const quiescer = engine.hooks.resolveQuiescer.call(linuxVm(vmName));
  if (!quiescer) throw new Error('fsfreeze did not serve the VM');
  return quiescer;
}

function child(options: unknown, deadlineMs: number): FreezeChild {
  const c = startFreezeChild({ options, vm: linuxVm('guest1'), deadlineMs, configDir: fx.dir, stateDir: path.join(fx.dir, 'state') });
  fx.children.push(c);
  return c;
}

/** Guest-side (ssh) watchdog processes that would thaw `mountPoint`: the guest is this machine. */
async function guestWatchdogsFor(mountPoint: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes('stillpoint-fsfreeze-watchdog-') && cmdline.includes(mountPoint) && cmdline.startsWith('sh\0-c\0sleep')) found.push(pid);
  }
  return found;
}

const local = (mountPoints: string[], extra: Record<string, unknown> = {}) => ({
  guests: { guest1: { channel: { type: 'local' }, mountPoints, ...extra } },
});

if (skipReason && !IN_CI) {
  test('fsfreeze integration tests', (t) => {
    t.log(`skipped: ${skipReason} (under CI=true they run and fail instead)`);
    t.pass();
  });
} else {
  test.before(async () => {
    const dir = await makeWorkDir();
    fx = { dir, children: [] } as unknown as Fixture;
    await mkdir(path.join(dir, 'state'));
    fx.ext4 = await createLoopMount(dir, 'ext4');
    fx.xfs = await createLoopMount(dir, 'xfs');
    fx.btrfs = await createLoopMount(dir, 'btrfs');
    fx.tmpfs = await createTmpfsMount(dir);
  });

  test.afterEach.always(async () => {
    for (const c of fx?.children ?? []) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
    if (fx) fx.children = [];
  });

  test.after.always(async () => {
    if (!fx) return;
    for (const c of fx.children) c.kill('SIGKILL');
    // Thaw first (removeMount does), so that nothing blocked on a frozen mount survives the tests.
    for (const m of [fx.ext4, fx.xfs, fx.btrfs, fx.tmpfs]) if (m) await removeMount(m);
    await fx.sshd?.stop();
    await fx.agent?.stop();
    await removeWorkDir(fx.dir);
  });

  // ---- local ------------------------------------------------------------------------------

  test.serial('local: ext4, xfs and btrfs freeze; writers block until the thaw; each filesystem is recorded', async (t) => {
    const quiescer = await quiescerFor(local([fx.ext4.mountPoint, fx.xfs.mountPoint, fx.btrfs.mountPoint]));
    const frozen = await quiescer.freeze(linuxVm('guest1'), { deadlineMs: 10_000 });
    const writers = [fx.ext4, fx.xfs, fx.btrfs].map((m) => startWriter(m.mountPoint));
    await sleep(400);
    t.deepEqual(writers.map((w) => w.finished()), [false, false, false], 'writers block while frozen');
    const outcome = await frozen.thaw();
    for (const w of writers) t.like(await endsWithin(w, 10_000), { code: 0 });
    t.is(outcome.consistency, 'application');
    t.deepEqual(
      outcome.details.map((d) => [d.target, d.consistency]),
      [fx.ext4, fx.xfs, fx.btrfs].map((m) => [m.mountPoint, 'application']),
    );
    t.regex(outcome.details[1].reason ?? '', /^xfs on \/dev\/loop\d+ frozen for \d+ ms$/);
    t.is(await frozen.thaw(), outcome, 'thaw is safe to call twice');
  });

  test.serial('local: one failing mount among several: the frozen ones are thawed, the failure is named', async (t) => {
    const quiescer = await quiescerFor(local([fx.ext4.mountPoint, fx.tmpfs.mountPoint, fx.xfs.mountPoint]));
    const error = await t.throwsAsync(quiescer.freeze(linuxVm('guest1'), { deadlineMs: 10_000 }), { instanceOf: FreezeFailedError });
    t.regex(error.message, new RegExp(`could not freeze ${fx.tmpfs.mountPoint} \\(tmpfs on stillpoint-test\\): .*Operation not supported`));
    t.regex(error.message, new RegExp(`thawed again: ${fx.ext4.mountPoint}`));
    t.deepEqual(
      error.outcome.details.map((d) => [d.target, d.consistency, (d.reason ?? '').split(' ').slice(0, 3).join(' ')]),
      [
        [fx.ext4.mountPoint, 'crash', 'frozen, then thawed'],
        [fx.tmpfs.mountPoint, 'crash', 'freeze failed: fsfreeze:'],
        [fx.xfs.mountPoint, 'crash', 'not frozen: another'],
      ],
    );
    for (const m of [fx.ext4, fx.xfs]) t.like(await endsWithin(startWriter(m.mountPoint), 5000), { code: 0 }, `${m.fsType} is writable`);
  });

  test.serial('local: SIGKILL of the freezing process: the watchdog thaws within the deadline', async (t) => {
    const deadlineMs = 4000;
    const c = child(local([fx.ext4.mountPoint, fx.btrfs.mountPoint]), deadlineMs);
    await c.line('frozen');
    const frozenAt = Date.now();
    const writer = startWriter(fx.btrfs.mountPoint);
    await sleep(300);
    t.false(writer.finished(), 'the writer blocks while frozen');
    c.kill('SIGKILL');
    const ended = await endsWithin(writer, deadlineMs + 2000);
    t.truthy(ended, 'the writer resumed');
    t.is(ended?.code, 0);
    t.true(ended!.endedAt - frozenAt < deadlineMs, `thawed ${ended!.endedAt - frozenAt} ms after the freeze`);
    t.like(await endsWithin(startWriter(fx.ext4.mountPoint), 5000), { code: 0 });
  });

  test.serial('local: a hung Stillpoint (SIGSTOP) is thawed at the deadline, and the late thaw records crash consistency', async (t) => {
    const deadlineMs = 2500;
    const c = child(local([fx.xfs.mountPoint]), deadlineMs);
    await c.line('frozen');
    const frozenAt = Date.now();
    const writer = startWriter(fx.xfs.mountPoint);
    c.kill('SIGSTOP');
    const ended = await endsWithin(writer, deadlineMs + 3000);
    t.truthy(ended, 'the watchdog thawed');
    const heldMs = ended!.endedAt - frozenAt;
    t.true(heldMs > 1000 && heldMs < deadlineMs + 2000, `thawed after ${heldMs} ms (deadline ${deadlineMs} ms)`);
    c.kill('SIGCONT');
    c.child.stdin.write('thaw\n');
    const outcome = JSON.parse((await c.line('outcome ')).slice('outcome '.length));
    t.is(outcome.consistency, 'crash');
    t.regex(outcome.details[0].reason, /reached its deadline of 2500 ms/);
  });

  test.serial('local: pre-freeze and post-thaw scripts run around the freeze, with their own timeouts', async (t) => {
    const m = fx.ext4.mountPoint;
    const pre = path.join(m, 'pre-marker');
    const post = path.join(m, 'post-marker');
    await rm(pre, { force: true });
    await rm(post, { force: true });
    const quiescer = await quiescerFor(
      local([m], {
        preFreeze: { command: `echo flushed > '${pre}'`, timeoutMs: 5000 },
        postThaw: { command: `echo resumed > '${post}'`, timeoutMs: 5000 },
      }),
    );
    const frozen = await quiescer.freeze(linuxVm('guest1'), { deadlineMs: 10_000 });
    t.is(await readFile(pre, 'utf8'), 'flushed\n');
    t.false(existsSync(post));
    const outcome = await frozen.thaw();
    t.is(await readFile(post, 'utf8'), 'resumed\n');
    t.regex(outcome.details[0].reason ?? '', /after the pre-freeze script/);

    await rm(post, { force: true });
    const failing = await quiescerFor(
      local([m], { preFreeze: { command: 'echo db busy >&2; exit 3' }, postThaw: { command: `echo resumed > '${post}'` } }),
    );
    const error = await t.throwsAsync(failing.freeze(linuxVm('guest1'), { deadlineMs: 10_000 }), { instanceOf: FreezeFailedError });
    t.regex(error.message, /pre-freeze script failed \(exit code 3: db busy\); not freezing/);
    t.true(existsSync(post), 'the post-thaw script ran after the failed pre-freeze script');
    t.like(await endsWithin(startWriter(m), 5000), { code: 0 }, 'not frozen');

    const slow = await quiescerFor(local([m], { preFreeze: { command: 'sleep 30', timeoutMs: 300 } }));
    const started = Date.now();
    const timeout = await t.throwsAsync(slow.freeze(linuxVm('guest1'), { deadlineMs: 10_000 }), { instanceOf: FreezeFailedError });
    t.regex(timeout.message, /timed out after 300 ms and was killed/);
    t.true(Date.now() - started < 5000);
  });

  test.serial('local: the filesystems this machine runs on, and paths that are not mount points, are refused', async (t) => {
    const root = await quiescerFor(local(['/']));
    const readiness = await root.readiness(linuxVm('guest1'));
    t.false(readiness.ready);
    t.regex(readiness.reason, /refusing to freeze \/ \(.*\), which holds \/: this machine runs on it/);
    await t.throwsAsync(root.freeze(linuxVm('guest1'), { deadlineMs: 1000 }), { message: /refusing to freeze \/ / });
    const inside = await quiescerFor(local([path.join(fx.ext4.mountPoint, 'lost+found')]));
    await t.throwsAsync(inside.freeze(linuxVm('guest1'), { deadlineMs: 1000 }), { message: /lost\+found" is not a mount point on the guest/ });
    const ready = await (await quiescerFor(local([fx.xfs.mountPoint]))).readiness(linuxVm('guest1'));
    t.true(ready.ready, ready.reason);
    t.regex(ready.reason, /can freeze .*mnt-xfs \(xfs on \/dev\/loop\d+\) over local for at most 10000 ms/);
  });

  // ---- ssh --------------------------------------------------------------------------------

  const sshOptions = (channel: Record<string, unknown>, mountPoints: string[]) => ({
    guests: {
      guest1: {
        channel: { type: 'ssh', host: '127.0.0.1', port: fx.sshd!.port, user: 'root', keyFile: fx.sshd!.clientKeyFile, ...channel },
        mountPoints,
      },
    },
  });

  test.serial('ssh: freezes through a real OpenSSH server that known_hosts vouches for', async (t) => {
    fx.sshd ??= await startSshd(path.join(fx.dir, 'sshd'));
    const quiescer = await quiescerFor(sshOptions({ knownHostsFile: fx.sshd.knownHostsFile }, [fx.ext4.mountPoint, fx.xfs.mountPoint, fx.btrfs.mountPoint]));
    const ready = await quiescer.readiness(linuxVm('guest1'));
    t.true(ready.ready, ready.reason);
    const frozen = await quiescer.freeze(linuxVm('guest1'), { deadlineMs: 10_000 });
    const writers = [fx.ext4, fx.xfs, fx.btrfs].map((m) => startWriter(m.mountPoint));
    await sleep(400);
    t.deepEqual(writers.map((w) => w.finished()), [false, false, false]);
    const outcome = await frozen.thaw();
    for (const w of writers) t.like(await endsWithin(w, 10_000), { code: 0 });
    t.is(outcome.consistency, 'application');
    t.is(outcome.details.length, 3);
  });

  test.serial('ssh: an unknown or different host key is refused, naming the host and the fingerprint seen', async (t) => {
    fx.sshd ??= await startSshd(path.join(fx.dir, 'sshd'));
    const sshd = fx.sshd;
    const otherKnownHosts = path.join(fx.dir, 'sshd', 'known_hosts.other');
    // A different key for this host (the client key), and the right key for another port.
    const clientPub = (await readFile(`${sshd.clientKeyFile}.pub`, 'utf8')).split(' ').slice(0, 2).join(' ');
    await writeFile(otherKnownHosts, `[127.0.0.1]:${sshd.port} ${clientPub}\n[127.0.0.1]:1 ${sshd.hostPublicKey}\n`);
    const changed = await quiescerFor(sshOptions({ knownHostsFile: otherKnownHosts }, [fx.ext4.mountPoint]));
    const error = await t.throwsAsync(changed.freeze(linuxVm('guest1'), { deadlineMs: 5000 }), { instanceOf: SshHostKeyError });
    t.is(error.fingerprint, sshd.hostFingerprint);
    t.true(error.message.includes(`the SSH server at 127.0.0.1:${sshd.port} presented host key ssh-ed25519 ${sshd.hostFingerprint}`));
    t.regex(error.message, /which differs from the ssh-ed25519 key listed for this host in .*known_hosts.other; refusing to connect/);

    await writeFile(otherKnownHosts, `[127.0.0.1]:1 ${sshd.hostPublicKey}\n`);
    const unknown = await quiescerFor(sshOptions({ knownHostsFile: otherKnownHosts }, [fx.ext4.mountPoint]));
    const readiness = await unknown.readiness(linuxVm('guest1'));
    t.false(readiness.ready);
    t.regex(readiness.reason, new RegExp(`${sshd.hostFingerprint.replace(/[+/]/g, '\\$&')}, which is not listed for this host`));

    process.env.STILLPOINT_TEST_SSH_KEY = await readFile(sshd.clientKeyFile, 'utf8');
    const byFingerprint = await quiescerFor(
      sshOptions({ keyFile: undefined, keyEnv: 'STILLPOINT_TEST_SSH_KEY', fingerprint: sshd.hostFingerprint }, [fx.ext4.mountPoint]),
    );
    const ok = await byFingerprint.readiness(linuxVm('guest1'));
    t.true(ok.ready, ok.reason);
    const wrong = `SHA256:${'A'.repeat(43)}`;
    const byWrongFingerprint = await quiescerFor(sshOptions({ fingerprint: wrong }, [fx.ext4.mountPoint]));
    const refused = await byWrongFingerprint.readiness(linuxVm('guest1'));
    t.false(refused.ready);
    t.true(refused.reason.includes(`presented host key ssh-ed25519 ${sshd.hostFingerprint}, not the configured fingerprint ${wrong}`));
    t.like(await endsWithin(startWriter(fx.ext4.mountPoint), 5000), { code: 0 }, 'nothing was frozen');
  });

  test.serial('ssh: SIGKILL of the freezing process: the watchdog on the guest thaws within the deadline', async (t) => {
    fx.sshd ??= await startSshd(path.join(fx.dir, 'sshd'));
    const deadlineMs = 3000;
    const c = child(sshOptions({ knownHostsFile: fx.sshd.knownHostsFile }, [fx.xfs.mountPoint, fx.btrfs.mountPoint]), deadlineMs);
    await c.line('frozen');
    const frozenAt = Date.now();
    const writer = startWriter(fx.xfs.mountPoint);
    await sleep(300);
    t.false(writer.finished());
    c.kill('SIGKILL');
    const ended = await endsWithin(writer, deadlineMs + 3000);
    t.truthy(ended, 'the guest watchdog thawed');
    t.true(ended!.endedAt - frozenAt < deadlineMs + 1500, `thawed ${ended!.endedAt - frozenAt} ms after the freeze`);
    t.like(await endsWithin(startWriter(fx.btrfs.mountPoint), 5000), { code: 0 });
  });

  // ---- qga --------------------------------------------------------------------------------

  const qgaOptions = (mountPoints: string[], extra: Record<string, unknown> = {}) => ({
    guests: { guest1: { channel: { type: 'qga', socket: fx.agent!.socket }, mountPoints, ...extra } },
  });
  const agentStatus = async () => {
    const agent = await QgaConnection.open(fx.agent!.socket, 5000);
    try {
      return await agent.execute<string>('guest-fsfreeze-status');
    } finally {
      agent.close();
    }
  };

  test.serial('qga: freezes only the listed mounts through the real guest agent, with a pre-freeze script by guest-exec', async (t) => {
    fx.agent ??= await startGuestAgent(fx.dir);
    const marker = path.join(fx.ext4.mountPoint, 'qga-pre');
    await rm(marker, { force: true });
    const quiescer = await quiescerFor(
      qgaOptions([fx.ext4.mountPoint, fx.btrfs.mountPoint], { preFreeze: { command: `echo flushed > '${marker}'`, timeoutMs: 10_000 } }),
    );
    const ready = await quiescer.readiness(linuxVm('guest1'));
    t.true(ready.ready, ready.reason);
    const frozen = await quiescer.freeze(linuxVm('guest1'), { deadlineMs: 10_000 });
    t.is(await readFile(marker, 'utf8'), 'flushed\n');
    t.is(await agentStatus(), 'frozen');
    const writers = [startWriter(fx.ext4.mountPoint), startWriter(fx.btrfs.mountPoint), startWriter(fx.xfs.mountPoint)];
    t.like(await endsWithin(writers[2], 5000), { code: 0 }, 'xfs was not in the list: not frozen');
    t.deepEqual([writers[0].finished(), writers[1].finished()], [false, false]);
    const outcome = await frozen.thaw();
    for (const w of writers) t.like(await endsWithin(w, 10_000), { code: 0 });
    t.is(await agentStatus(), 'thawed');
    t.is(outcome.consistency, 'application');
    t.deepEqual(outcome.details.map((d) => d.target), [fx.ext4.mountPoint, fx.btrfs.mountPoint]);
  });

  test.serial('qga: a mount the agent cannot freeze is refused before anything is frozen', async (t) => {
    fx.agent ??= await startGuestAgent(fx.dir);
    const quiescer = await quiescerFor(qgaOptions([fx.ext4.mountPoint, fx.tmpfs.mountPoint]));
    await t.throwsAsync(quiescer.freeze(linuxVm('guest1'), { deadlineMs: 5000 }), {
      message: /mnt-tmpfs" is not a mount point on the guest \(guest-get-fsinfo lists only filesystems on block devices/,
    });
    t.is(await agentStatus(), 'thawed');
  });

  test.serial('qga: SIGKILL of the freezing process: the local watchdog thaws through the socket within the deadline', async (t) => {
    fx.agent ??= await startGuestAgent(fx.dir);
    const deadlineMs = 4000;
    const c = child(qgaOptions([fx.xfs.mountPoint]), deadlineMs);
    await c.line('frozen');
    const frozenAt = Date.now();
    const writer = startWriter(fx.xfs.mountPoint);
    await sleep(300);
    t.false(writer.finished());
    c.kill('SIGKILL');
    const ended = await endsWithin(writer, deadlineMs + 3000);
    t.truthy(ended, 'the watchdog thawed');
    t.true(ended!.endedAt - frozenAt < deadlineMs, `thawed ${ended!.endedAt - frozenAt} ms after the freeze`);
    t.is(await agentStatus(), 'thawed');
  });

  test.serial('qga: a hung Stillpoint (SIGSTOP) is thawed at the deadline by the watchdog', async (t) => {
    fx.agent ??= await startGuestAgent(fx.dir);
    const deadlineMs = 2500;
    const c = child(qgaOptions([fx.ext4.mountPoint]), deadlineMs);
    await c.line('frozen');
    const frozenAt = Date.now();
    const writer = startWriter(fx.ext4.mountPoint);
    c.kill('SIGSTOP');
    const ended = await endsWithin(writer, deadlineMs + 3000);
    t.truthy(ended);
    const heldMs = ended!.endedAt - frozenAt;
    t.true(heldMs > 1000 && heldMs < deadlineMs + 2000, `thawed after ${heldMs} ms`);
    c.kill('SIGCONT');
    c.child.stdin.write('thaw\n');
    const outcome = JSON.parse((await c.line('outcome ')).slice('outcome '.length));
    t.is(outcome.consistency, 'crash');
  });

  test.serial('thawOrphaned (the journal reconcile) thaws what a dead run left frozen, on each channel', async (t) => {
    fx.sshd ??= await startSshd(path.join(fx.dir, 'sshd'));
    fx.agent ??= await startGuestAgent(fx.dir);
    const channels = {
      local: local([fx.btrfs.mountPoint]),
      ssh: sshOptions({ knownHostsFile: fx.sshd.knownHostsFile }, [fx.btrfs.mountPoint]),
      qga: qgaOptions([fx.btrfs.mountPoint]),
    };
    for (const [name, options] of Object.entries(channels)) {
      const c = child(options, 20_000);
      await c.line('frozen');
      // A hung run: its watchdog would thaw only at the deadline (20 s).
      c.kill('SIGSTOP');
      const writer = startWriter(fx.btrfs.mountPoint);
      await sleep(200);
      t.false(writer.finished(), `${name}: frozen`);
      const quiescer = await quiescerFor(options);
      t.true(await quiescer.thawOrphaned!(linuxVm('guest1')), `${name}: was frozen`);
      t.like(await endsWithin(writer, 5000), { code: 0 }, `${name}: thawed`);
      t.false(await quiescer.thawOrphaned!(linuxVm('guest1')), `${name}: nothing left frozen`);
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
    t.deepEqual(await guestWatchdogsFor(fx.btrfs.mountPoint), [], 'the dead run\'s watchdog on the ssh guest was stopped');
  });
}
