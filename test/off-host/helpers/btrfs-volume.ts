import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A real btrfs filesystem on a loop device, mounted in a temporary directory, for tests.
 * Needs root and btrfs-progs. `cleanup()` deletes every subvolume, unmounts and removes the files.
 */
export interface LoopBtrfs {
  dir: string;
  mount: string;
  /** Creates a subvolume at `mount/name` and returns its path. */
  subvolume(name: string): string;
  cleanup(): void;
}

function has(program: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Why a btrfs loop volume cannot be made here, or undefined when it can. */
export function btrfsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (loop devices and mount)';
  for (const p of ['mkfs.btrfs', 'btrfs', 'mount', 'umount', 'losetup']) if (!has(p)) return `needs the program ${p} (apt-get install btrfs-progs util-linux)`;
  return undefined;
}

/** Decided at load time: true when the test must skip (outside CI, without root or btrfs). Under CI=true never skips. */
export function skipBtrfs(): string | undefined {
  const why = btrfsUnavailable();
  if (why && process.env.CI === 'true') return undefined; // run and fail loudly
  return why;
}

export function makeLoopBtrfs(sizeMiB = 256): LoopBtrfs {
  const dir = mkdtempSync(join(tmpdir(), 'stillpoint-btrfs-'));
  const image = join(dir, 'fs.img');
  const mount = join(dir, 'mnt');
  mkdirSync(mount);
  execFileSync('truncate', ['-s', `${sizeMiB}M`, image]);
  execFileSync('mkfs.btrfs', ['-q', image], { stdio: 'ignore' });
  execFileSync('mount', ['-o', 'loop', image, mount]);
  return {
    dir,
    mount,
    subvolume(name) {
      const path = join(mount, name);
      execFileSync('btrfs', ['subvolume', 'create', path], { stdio: 'ignore' });
      return path;
    },
    cleanup() {
      try {
        execFileSync('umount', [mount]);
      } catch {
        execFileSync('umount', ['-l', mount]);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
