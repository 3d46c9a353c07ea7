/** Shared helpers of the VHDX tests: test images, oracles (qemu-img, libvhdi), temp dirs. */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SHARED_VHDX = resolve(repoRoot, '..', 'shared', 'testdata', 'vhdx');
export const haveShared = existsSync(SHARED_VHDX);
export const CI = process.env.CI === 'true';
export const SKIP_SHARED = `../shared/testdata/vhdx is absent (${SHARED_VHDX}); the real-image tests need it`;

export function have(cmd: string, args: string[] = ['--version']): boolean {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}
export const haveQemuImg = have('qemu-img');
export const PY = '/usr/bin/python3';
export const havePyvhdi = have(PY, ['-c', 'import pyvhdi']);

/** Programs a test needs: skip outside CI when missing, fail under CI=true. */
export function oracle(name: 'qemu-img' | 'pyvhdi'): { ok: boolean; why: string } {
  const ok = name === 'qemu-img' ? haveQemuImg : havePyvhdi;
  const why = name === 'qemu-img'
    ? 'qemu-img is not installed (Debian qemu-utils; scripts/install-system-deps.sh)'
    : `${PY} cannot import pyvhdi (Debian python3-libvhdi; scripts/install-system-deps.sh)`;
  if (!ok && CI) throw new Error(`${why}; CI must run this test`);
  return { ok, why };
}

export function tempDir(tag: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `stillpoint-vhdx-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Decompresses a test image into `dir` and returns its path. */
export function extractImage(name: string, dir: string): string {
  const src = join(SHARED_VHDX, name);
  const out = join(dir, name.replace(/\.(gz|bz2)$/, ''));
  if (existsSync(out)) return out;
  if (name.endsWith('.gz')) {
    writeFileSync(out, gunzipSync(readFileSync(src)));
  } else {
    const fd = openSync(out, 'w');
    try {
      const r = spawnSync('bunzip2', ['-c', src], { stdio: ['ignore', fd, 'pipe'] });
      if (r.status !== 0) throw new Error(`bunzip2 ${src} failed: ${r.stderr}`);
    } finally {
      closeSync(fd);
    }
  }
  return out;
}

export function md5File(path: string): string {
  return createHash('md5').update(readFileSync(path)).digest('hex');
}

export function qemuImg(args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Reads ranges of a chain with libvhdi (pyvhdi), top first, and returns the bytes of each
 * range concatenated. `ranges` are [offset, length] pairs.
 */
export function pyvhdiRead(chain: string[], ranges: [number, number][], outPath: string): Buffer {
  const script = `
import pyvhdi, sys, json
paths = json.loads(sys.argv[1]); ranges = json.loads(sys.argv[2])
files = []
for p in paths:
    f = pyvhdi.file(); f.open(p); files.append(f)
for i in range(len(files) - 1):
    files[i].set_parent(files[i + 1])
top = files[0]
with open(sys.argv[3], 'wb') as out:
    for off, ln in ranges:
        top.seek(off)
        left = ln
        while left > 0:
            b = top.read(min(left, 8 << 20))
            if not b: raise SystemExit('short read at %d' % off)
            out.write(b); left -= len(b)
`;
  execFileSync(PY, ['-c', script, JSON.stringify(chain), JSON.stringify(ranges), outPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  const b = readFileSync(outPath);
  rmSync(outPath, { force: true });
  return b;
}
