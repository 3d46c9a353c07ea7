import { execFile } from 'node:child_process';
import { statfsSync, statSync } from 'node:fs';
import { stat, statfs } from 'node:fs/promises';
import createDebug from 'debug';
import { StillpointError } from '../../core/errors.ts';

const debug = createDebug('stillpoint:btrfs');

/** `f_type` of a btrfs filesystem (BTRFS_SUPER_MAGIC). */
export const BTRFS_SUPER_MAGIC = 0x9123683e;
/** Inode number of the root directory of every btrfs subvolume (BTRFS_FIRST_FREE_OBJECTID). */
export const SUBVOLUME_ROOT_INODE = 256;

/** Why `path` is not a btrfs subvolume, or `undefined` when it is one. Synchronous, for provider hooks. */
export function whyNotSubvolumeSync(path: string): string | undefined {
  try {
    const fs = statfsSync(path);
    if (Number(fs.type) !== BTRFS_SUPER_MAGIC) return `${path} is not on a btrfs filesystem (f_type 0x${Number(fs.type).toString(16)})`;
    const st = statSync(path);
    if (!st.isDirectory()) return `${path} is not a directory`;
    if (Number(st.ino) !== SUBVOLUME_ROOT_INODE) return `${path} is a directory on btrfs but not the root of a subvolume (inode ${st.ino}, a subvolume root has ${SUBVOLUME_ROOT_INODE})`;
    return undefined;
  } catch (error) {
    return `${path} cannot be examined: ${(error as Error).message}`;
  }
}

export async function isSubvolume(path: string): Promise<boolean> {
  try {
    const [fs, st] = await Promise.all([statfs(path), stat(path)]);
    return Number(fs.type) === BTRFS_SUPER_MAGIC && st.isDirectory() && Number(st.ino) === SUBVOLUME_ROOT_INODE;
  } catch {
    return false;
  }
}

/**
 * Runs the `btrfs` program (btrfs-progs) with `args`; resolves with its stdout.
 * Errors name the command and carry btrfs's own message.
 */
export function runBtrfs(program: string, args: string[]): Promise<string> {
  debug('%s %s', program, args.join(' '));
  return new Promise((resolve, reject) => {
    execFile(program, args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        return reject(new StillpointError(`the btrfs program "${program}" was not found`, {
          where: 'btrfs snapshot provider',
          hint: 'install btrfs-progs (Debian: apt-get install btrfs-progs) or set the plugin option "program"',
          cause: error,
        }));
      }
      const text = (stderr || stdout || error.message).trim().split('\n').filter((l) => !/^NOTE:|^\s+-/.test(l)).join('; ');
      reject(new StillpointError(`"${program} ${args.join(' ')}" failed: ${text}`, { where: 'btrfs snapshot provider', cause: error }));
    });
  });
}
