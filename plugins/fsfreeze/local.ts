/**
 * The local channel: the machine Stillpoint runs on (a physical Linux server, or an agent inside a
 * guest). Freezes with util-linux `fsfreeze`; the watchdog is a detached local process.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir, realpath } from 'node:fs/promises';
import os from 'node:os';
import { StillpointError } from '../../core/errors.ts';
import type { ArmedWatchdog, FreezeResult, GuestChannel, MountTable, ScriptResult, ThawReport } from './channel.ts';
import { freezeInOrder, thawInReverse, type CommandOutcome } from './fsfreeze-command.ts';
import { describeTarget, mountContaining, parseMountInfo, type FreezeTarget, type MountEntry } from './mounts.ts';
import { spawnWatchdog } from './watchdog-spawn.ts';

export function runLocal(file: string, args: string[], timeoutMs: number): Promise<CommandOutcome> {
  return new Promise((resolve) => {
    // A process stuck in the FIFREEZE ioctl may not die at once even by SIGKILL: do not wait for it.
    const stuck = setTimeout(() => resolve({ code: null, stderr: '', timedOut: true }), timeoutMs + 1000);
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (error, _stdout, stderr) => {
      clearTimeout(stuck);
      if (!error) return resolve({ code: 0, stderr, timedOut: false });
      const code = typeof error.code === 'number' ? error.code : null;
      const timedOut = error.killed === true && code === null;
      resolve({
        code,
        stderr,
        timedOut,
        error: typeof error.code === 'string' ? `cannot run ${file}: ${error.message}` : undefined,
      });
    });
  });
}

/** Run `sh -c command` in its own process group; on timeout kill the whole group. */
export function runLocalScript(command: string, timeoutMs: number): Promise<ScriptResult> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', command], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-2000);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, timeoutMs);
    const tail = () => (stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : '');
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, summary: `could not start: ${error.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) resolve({ ok: false, summary: `timed out after ${timeoutMs} ms and was killed${tail()}` });
      else if (code === 0) resolve({ ok: true, summary: 'exit code 0' });
      else resolve({ ok: false, summary: `${signal ? `killed by ${signal}` : `exit code ${code}`}${tail()}` });
    });
  });
}

/** `major:minor` of every loop block device, from /sys/dev/block/<dev>/loop. */
export async function localLoopDevices(): Promise<Set<string>> {
  const devices = new Set<string>();
  for (const name of await readdir('/sys/dev/block').catch(() => [] as string[])) {
    if (existsSync(`/sys/dev/block/${name}/loop`)) devices.add(name);
  }
  return devices;
}

export class LocalChannel implements GuestChannel {
  readonly description = 'local';

  async probe(): Promise<void> {
    if (process.getuid?.() !== 0) {
      throw new StillpointError('freezing filesystems needs root (CAP_SYS_ADMIN); Stillpoint runs as a normal user', {
        where: 'local',
        hint: 'Run Stillpoint as root on this machine, or reach it through the ssh channel with sudo',
      });
    }
    const version = await runLocal('fsfreeze', ['--version'], 10_000);
    if (version.code !== 0) {
      throw new StillpointError(`fsfreeze is not usable: ${version.error ?? version.stderr.trim()}`, {
        where: 'local',
        hint: 'Install util-linux',
      });
    }
  }

  async mountTable(): Promise<MountTable> {
    return { mounts: parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8')), loopDevices: await localLoopDevices() };
  }

  runScript(command: string, timeoutMs: number): Promise<ScriptResult> {
    return runLocalScript(command, timeoutMs);
  }

  armWatchdog(targets: FreezeTarget[], deadlineMs: number): Promise<ArmedWatchdog> {
    return spawnWatchdog({ kind: 'local', mountPoints: targets.map((t) => t.mountPoint) }, deadlineMs, 'local');
  }

  freeze(targets: FreezeTarget[], deadlineAt: number): Promise<FreezeResult> {
    return freezeInOrder((flag, mountPoint, timeoutMs) => runLocal('fsfreeze', [flag, mountPoint], timeoutMs), targets, deadlineAt);
  }

  thaw(targets: FreezeTarget[]): Promise<ThawReport[]> {
    return thawInReverse((flag, mountPoint, timeoutMs) => runLocal('fsfreeze', [flag, mountPoint], timeoutMs), targets);
  }

  async close(): Promise<void> {}
}

/**
 * The filesystems this machine itself runs on: those holding "/", the temp directory, Stillpoint's
 * own code and working directory, and its state directory. Freezing one of them can hang Stillpoint
 * (or the machine) before it thaws, so a local freeze refuses them unless `freezeAll` is set.
 */
export async function refuseOwnFilesystems(mounts: MountEntry[], targets: FreezeTarget[], stateDir: string): Promise<void> {
  const own = new Map<string, string>();
  const places = ['/', os.tmpdir(), process.cwd(), stateDir, new URL('.', import.meta.url).pathname];
  for (const place of places) {
    const resolved = await realpath(place).catch(() => undefined);
    if (!resolved) continue;
    const mount = mountContaining(mounts, resolved);
    if (mount && !own.has(mount.device)) own.set(mount.device, place);
  }
  const refused = targets.filter((t) => own.has(t.device));
  if (refused.length > 0) {
    throw new StillpointError(
      `refusing to freeze ${refused.map((t) => `${describeTarget(t)}, which holds ${own.get(t.device)}`).join('; ')}: this machine runs on it`,
      {
        where: 'local',
        hint: 'Freeze only data filesystems in mountPoints; freezing the system filesystems needs freezeAll: true with an explicit deadlineMs',
      },
    );
  }
}
