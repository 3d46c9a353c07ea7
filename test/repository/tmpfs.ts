import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** True when this process may mount (root). */
export const canMount = process.getuid?.() === 0;

/** Mount a small tmpfs (a real filesystem that fills up) in a new temp dir; returns it and its unmount. */
export function mountTmpfs(sizeMiB: number): { dir: string; unmount(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'stillpoint-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', dir]);
  return {
    dir,
    unmount() {
      execFileSync('umount', [dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Fill the filesystem holding `dir` until only about `leaveBytes` are free; returns a function to undo it. */
export function fillUp(dir: string, leaveBytes: number): () => void {
  const s = statfsSync(dir);
  const free = Number(s.bavail) * Number(s.bsize);
  const filler = join(dir, 'filler');
  writeFileSync(filler, Buffer.alloc(Math.max(0, free - leaveBytes)));
  return () => unlinkSync(filler);
}
