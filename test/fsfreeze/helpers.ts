/**
 * Test helpers for fsfreeze: loop-mounted filesystems the tests create (and always remove, thawing
 * first), writers that block on a frozen filesystem, and a child process that freezes and can be
 * killed.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { VmFacts } from '../../core/contracts/vm.ts';

export const IN_CI = process.env.CI === 'true';

export function run(file: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr: stderr || (error && code === -1 ? error.message : '') });
    });
  });
}

export async function mustRun(file: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const result = await run(file, args, timeoutMs);
  if (result.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${result.code}): ${result.stderr.trim()}`);
  return result.stdout;
}

/** Why the root tests cannot run here, or undefined when they can. */
export async function rootSkipReason(programs: string[]): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'these tests freeze loop-mounted filesystems and need root';
  for (const program of programs) {
    const found = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((dir) => existsSync(path.join(dir, program)));
    if (!found) return `${program} is not installed (scripts/install-system-deps.sh installs it)`;
  }
  if (!existsSync('/dev/loop-control')) return 'no loop device support (/dev/loop-control)';
  return undefined;
}

export async function makeWorkDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'stillpoint-fsfreeze-'));
}

export interface TestMount {
  fsType: string;
  mountPoint: string;
  device?: string;
  image?: string;
}

const SIZE_MB: Record<string, number> = { ext4: 32, xfs: 320, btrfs: 128 };

/** Create an image (sparse), make a filesystem, attach a loop device and mount it under `dir`. */
export async function createLoopMount(dir: string, fsType: 'ext4' | 'xfs' | 'btrfs', label = fsType): Promise<TestMount> {
  const image = path.join(dir, `${label}.img`);
  const mountPoint = path.join(dir, `mnt-${label}`);
  await mkdir(mountPoint, { recursive: true });
  await writeFile(image, '');
  await truncate(image, SIZE_MB[fsType] * 1024 * 1024);
  const mkfs: Record<string, [string, string[]]> = {
    ext4: ['mkfs.ext4', ['-q', '-F', image]],
    xfs: ['mkfs.xfs', ['-q', '-f', image]],
    btrfs: ['mkfs.btrfs', ['-q', '-f', image]],
  };
  const [program, args] = mkfs[fsType];
  await mustRun(program, args);
  const device = (await mustRun('losetup', ['--find', '--show', image])).trim();
  try {
    await mustRun('mount', [device, mountPoint]);
  } catch (error) {
    await run('losetup', ['-d', device]);
    throw error;
  }
  return { fsType, mountPoint, device, image };
}

/** A tmpfs (cannot be frozen: FIFREEZE gives EOPNOTSUPP). */
export async function createTmpfsMount(dir: string): Promise<TestMount> {
  const mountPoint = path.join(dir, 'mnt-tmpfs');
  await mkdir(mountPoint, { recursive: true });
  await mustRun('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'stillpoint-test', mountPoint]);
  return { fsType: 'tmpfs', mountPoint };
}

/** Thaw (in case a test left it frozen), unmount, detach, remove. Never throws. */
export async function removeMount(mount: TestMount): Promise<void> {
  await run('fsfreeze', ['-u', mount.mountPoint], 10_000);
  let unmounted = (await run('umount', [mount.mountPoint], 30_000)).code === 0;
  if (!unmounted) {
    await new Promise((r) => setTimeout(r, 500));
    await run('fsfreeze', ['-u', mount.mountPoint], 10_000);
    unmounted = (await run('umount', [mount.mountPoint], 30_000)).code === 0;
    if (!unmounted) await run('umount', ['-l', mount.mountPoint], 30_000);
  }
  if (mount.device) await run('losetup', ['-d', mount.device]);
  if (mount.image) await rm(mount.image, { force: true });
}

export async function removeWorkDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface Writer {
  /** Resolves with the exit code and when it ended. */
  done: Promise<{ code: number | null; endedAt: number }>;
  finished(): boolean;
}

let writerCount = 0;
/** A writer that creates a file and fsyncs it: it blocks while the filesystem is frozen. */
export function startWriter(mountPoint: string): Writer {
  const file = path.join(mountPoint, `probe-${process.pid}-${++writerCount}`);
  const child = spawn('dd', ['if=/dev/zero', `of=${file}`, 'bs=64k', 'count=4', 'conv=fsync', 'status=none'], { stdio: 'ignore' });
  let ended = false;
  const done = new Promise<{ code: number | null; endedAt: number }>((resolve) => {
    child.on('exit', (code) => {
      ended = true;
      resolve({ code, endedAt: Date.now() });
    });
    child.on('error', () => {
      ended = true;
      resolve({ code: -1, endedAt: Date.now() });
    });
  });
  return { done, finished: () => ended };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the writer's end, or undefined if it is still blocked after `ms`. */
export async function endsWithin(writer: Writer, ms: number): Promise<{ code: number | null; endedAt: number } | undefined> {
  return Promise.race([writer.done, sleep(ms).then(() => undefined)]);
}

export function linuxVm(name: string, id = `${name}-id`): VmFacts {
  return {
    id,
    name,
    host: 'localhost',
    driver: 'test',
    clustered: false,
    configurationVersion: '9.0',
    generation: 2,
    guestOs: 'linux',
    state: 'running',
    checkpointType: 'production',
    integration: {},
    disks: [],
  };
}

const CHILD_FILE = fileURLToPath(new URL('./freeze-child.ts', import.meta.url));

export interface FreezeChild {
  child: ChildProcessWithoutNullStreams;
  /** Resolves with the first line that starts with `prefix`. */
  line(prefix: string, timeoutMs?: number): Promise<string>;
  kill(signal: NodeJS.Signals): void;
}

/** A separate process that loads the plugin, freezes the VM, prints `frozen` and waits for `thaw`. */
export function startFreezeChild(request: { options: unknown; vm: VmFacts; deadlineMs: number; configDir: string; stateDir: string }): FreezeChild {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), CHILD_FILE, JSON.stringify(request)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let text = '';
  let stderr = '';
  const waiters = new Set<() => void>();
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    text += chunk;
    let i: number;
    while ((i = text.indexOf('\n')) >= 0) {
      lines.push(text.slice(0, i));
      text = text.slice(i + 1);
    }
    for (const w of waiters) w();
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  let exited = false;
  child.on('exit', () => {
    exited = true;
    for (const w of waiters) w();
  });
  return {
    child,
    kill: (signal) => {
      if (!exited) child.kill(signal);
    },
    line: (prefix, timeoutMs = 60_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find((l) => l.startsWith(prefix));
          if (found !== undefined) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          } else if (exited) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`freeze child exited before printing "${prefix}": ${lines.join('\n')}\n${stderr}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`freeze child did not print "${prefix}" within ${timeoutMs} ms: ${lines.join('\n')}\n${stderr}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}
