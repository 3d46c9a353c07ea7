/**
 * Benchmark: the Stillpoint repository against restic and borg (Debian's packages), same run,
 * same 4 GiB disk image with mixed real content (file data from /usr, incompressible data and
 * unallocated zeros). Full backup, then incrementals after ~5% of the disk changed in scattered
 * 1 MiB places (Stillpoint gets the changed ranges, as from change tracking; restic and borg
 * re-read the whole image), then restores of the latest backup (from a repository in the page
 * cache, as the image is for the backups, and with every cache dropped). Wall time, peak memory
 * (/usr/bin/time -v), repository size after each step; a table and the ratios the issue asks for.
 *
 * Each timed step runs `--repeat` times per tool (3 by default), the tools taking turns in an order
 * that rotates from one round to the next, and every repetition starts from the same state (the
 * repositories and caches as they were before the step are copied back). The table gives the median
 * and the range; the ratios compare medians. On a shared VM one run of a tool can be 10–20% slower
 * than the next, which a single run would blame on the tool.
 *
 *   node --import tsx scripts/bench/repository-vs-restic-borg.ts [--size-gib 4] [--incrementals 2] [--repeat 3]
 *        [--chunk-sizes 262144,1048576 (default: the repository's default)] [--dir /var/tmp/stillpoint-bench] [--keep]
 *
 * Stillpoint runs from a bundle (scripts/bundle.ts, into dist/bench), as a production build would.
 *
 * Installs restic, borgbackup and time with apt-get when they are missing (root).
 * All three repositories are encrypted (restic always is; borg repokey; Stillpoint AES-256-GCM).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { repositoryConfigSchema } from '../../core/repository/options.ts';
import { bundle } from '../bundle.ts';

const { values } = parseArgs({
  options: {
    'size-gib': { type: 'string', default: '4' },
    incrementals: { type: 'string', default: '2' },
    repeat: { type: 'string', default: '3' },
    // Empty: the repository's default chunk size.
    'chunk-sizes': { type: 'string', default: '' },
    dir: { type: 'string', default: '/var/tmp/stillpoint-bench' },
    keep: { type: 'boolean', default: false },
    // Only Stillpoint (no ratios): for a quick look while working on it.
    'stillpoint-only': { type: 'boolean', default: false },
  },
});
const SIZE = Number(values['size-gib']) * 2 ** 30;
const INCREMENTALS = Number(values.incrementals);
const REPEAT = Math.max(1, Number(values.repeat));
const CHUNK_SIZES: Array<number | null> = values['chunk-sizes'] ? values['chunk-sizes'].split(',').map(Number) : [null];
const DIR = values.dir!;
const MiB = 2 ** 20;
const PASS = 'benchmark passphrase';

// ---- tools ------------------------------------------------------------------------------------

function ensureTools(): void {
  const missing = [['restic', 'restic'], ['borg', 'borgbackup'], ['/usr/bin/time', 'time']].filter(([bin]) => spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0).map(([, pkg]) => pkg);
  if (missing.length === 0) return;
  console.log(`installing ${missing.join(' ')} with apt-get…`);
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

interface Measure {
  seconds: number;
  peakMiB: number;
  stdout: string;
}

/** Run a command under /usr/bin/time -v: wall time and peak RSS of the process tree's largest process. */
function measure(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Measure {
  const r = spawnSync('/usr/bin/time', ['-v', cmd, ...args], { env: { ...process.env, ...env }, cwd, encoding: 'utf8', maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr.slice(-3000)}`);
  const wall = /Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):(\d+(?:\.\d+)?)/.exec(r.stderr)!;
  const seconds = Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3]);
  const peak = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)![1]) / 1024;
  return { seconds, peakMiB: peak, stdout: r.stdout };
}

/**
 * Touch (and free) as much memory as a run will fill, right before each run of each tool, so that
 * no tool pays for the first use of guest memory: in a VM that hands freed memory back to its host,
 * touching it again is several times slower, and that weighs on a sub-second run (a third of it)
 * far more than on a ten-second one.
 */
function warmUp(): void {
  const scratch = join(DIR, 'warm-up');
  execFileSync('dd', ['if=/dev/zero', `of=${scratch}`, 'bs=1M', `count=${Math.round((SIZE * 2) / MiB)}`, 'status=none']);
  rmSync(scratch);
}

function du(path: string): number {
  return Number(execFileSync('du', ['-sb', path], { encoding: 'utf8' }).split(/\s+/)[0]);
}

// ---- the disk image -------------------------------------------------------------------------

/** Real file content: a tar stream of /usr (repeated when the image needs more). */
class RealContent {
  private chunks: Buffer[] = [];
  private have = 0;
  private proc = spawn('tar', ['-cf', '-', '--ignore-failed-read', '/usr/share', '/usr/lib', '/usr/bin', '/usr/include'], { stdio: ['ignore', 'pipe', 'ignore'] });
  private ended = false;
  private waiters: Array<() => void> = [];
  constructor() {
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.have += d.length;
      if (this.have > 256 * MiB) this.proc.stdout!.pause();
      this.waiters.splice(0).forEach((w) => w());
    });
    this.proc.stdout!.on('end', () => {
      this.ended = true;
      this.waiters.splice(0).forEach((w) => w());
    });
  }
  async take(n: number): Promise<Buffer> {
    while (this.have < n && !this.ended) {
      this.proc.stdout!.resume();
      await new Promise<void>((r) => this.waiters.push(r));
    }
    if (this.have < n) {
      // The tar stream ran out: start over (real disks hold copies too).
      this.proc = new RealContent().proc;
      throw new Error('not enough file content under /usr for the image');
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = [all.subarray(n)];
    this.have -= n;
    if (this.have < 256 * MiB) this.proc.stdout!.resume();
    return all.subarray(0, n);
  }
  stop() {
    this.proc.kill();
  }
}

/**
 * 64 MiB regions: 50% file data from /usr, 20% incompressible (media, compressed archives),
 * 30% zeros (free space). The order is fixed by a seeded sequence.
 */
async function buildImage(path: string): Promise<void> {
  if (existsSync(path) && readFileSync(`${path}.done`, { flag: 'a+' }).toString() === String(SIZE)) {
    console.log(`reusing ${path}`);
    return;
  }
  console.log(`building a ${SIZE / 2 ** 30} GiB mixed-content image at ${path}…`);
  const content = new RealContent();
  const handle = await open(path, 'w');
  await handle.truncate(SIZE);
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const REGION = 64 * MiB;
  let fileBytes = 0;
  for (let off = 0; off < SIZE; off += REGION) {
    const r = rnd();
    if (r < 0.5) {
      let buf: Buffer;
      try {
        buf = await content.take(REGION);
      } catch {
        buf = randomBytes(REGION);
      }
      fileBytes += REGION;
      await handle.write(buf, 0, REGION, off);
    } else if (r < 0.7) {
      await handle.write(randomBytes(REGION), 0, REGION, off);
    }
  }
  content.stop();
  await handle.close();
  writeFileSync(`${path}.done`, String(SIZE));
  console.log(`image built (${Math.round(fileBytes / MiB)} MiB of file data)`);
}

/** Change ~5% of the image in scattered 1 MiB places (not aligned); returns the ranges. */
async function changeImage(path: string, round: number): Promise<Array<{ offset: number; length: number }>> {
  const count = Math.round((SIZE * 0.05) / MiB);
  let seed = 777 + round;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const handle = await open(path, 'r+');
  const ranges = [];
  const text = Buffer.from(readFileSync('/usr/share/common-licenses/GPL-3', 'utf8').repeat(40)).subarray(0, MiB);
  for (let i = 0; i < count; i++) {
    const offset = Math.floor(rnd() * (SIZE - MiB));
    // Half the writes are text-like (compressible), half incompressible.
    const data = i % 2 === 0 ? Buffer.concat([text.subarray(i % 1000), text.subarray(0, i % 1000)]) : randomBytes(MiB);
    await handle.write(data, 0, MiB, offset);
    ranges.push({ offset, length: MiB });
  }
  await handle.close();
  return ranges;
}

// ---- the runs ---------------------------------------------------------------------------------

interface Row {
  tool: string;
  step: string;
  /** Wall time of each repetition. */
  runs: number[];
  peakMiB: number;
  repoBytes: number;
  note?: string;
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

/** The tools in the order of round `round` (rotated, so that none always runs first). */
function rotated<T>(items: T[], round: number): T[] {
  const k = round % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/**
 * Run `one(i, round)` for every tool `REPEAT` times, the tools taking turns in an order that
 * rotates each round; each run's wall time and peak memory go into the tool's row `rows[i]`.
 */
function timeRounds(rows: Row[], one: (i: number, round: number) => Measure): void {
  for (let round = 0; round < REPEAT; round++) {
    for (const i of rotated([...rows.keys()], round)) {
      const m = one(i, round);
      rows[i].runs.push(m.seconds);
      rows[i].peakMiB = Math.max(rows[i].peakMiB, m.peakMiB);
    }
  }
}

/**
 * Save what a tool's step starts from (its repository and cache), to put it back before each
 * further repetition of the step; `drop` deletes the saved copy.
 */
function saveState(files: string[], where: string): { restore(): void; drop(): void } {
  rmSync(where, { recursive: true, force: true });
  const saved = files.filter((f) => existsSync(f)).map((f, i) => ({ f, copy: join(where, String(i)) }));
  mkdirSync(where, { recursive: true });
  for (const { f, copy } of saved) execFileSync('cp', ['-a', f, copy]);
  return {
    restore() {
      for (const f of files) rmSync(f, { recursive: true, force: true });
      for (const { f, copy } of saved) execFileSync('cp', ['-a', copy, f]);
    },
    drop: () => rmSync(where, { recursive: true, force: true }),
  };
}

async function main(): Promise<void> {
  ensureTools();
  mkdirSync(DIR, { recursive: true });
  const image = join(DIR, 'disk.img');
  const pristine = join(DIR, 'disk.pristine.img');
  await buildImage(pristine);
  const rows: Row[] = [];
  // Stillpoint runs bundled (scripts/bundle.ts), as a production build would: no tsx at start-up.
  const [stillpoint] = await bundle(join(import.meta.dirname, '..', '..', 'dist', 'bench'), [join(import.meta.dirname, 'repository-stillpoint.ts')]);
  const restoreOut = join(DIR, 'restored');

  // `files`: what a restore reads (the repository and the tool's cache); `output`: the image it restores.
  const tools: Array<{ name: string; init(): void; backup(step: string, changedFile: string | null): Measure; restore(): Measure; repo: string; files: string[]; output: string }> = [];
  for (const cs of CHUNK_SIZES) {
    const label = cs === null ? 'default' : String(cs);
    const repo = join(DIR, `stillpoint-${label}`);
    const output = join(restoreOut, `stillpoint-${label}.img`);
    tools.push({
      name: `stillpoint ${cs === null ? `${repositoryConfigSchema.shape.chunkSize.parse(undefined) / 1024} KiB (default)` : `${cs / 1024} KiB`}`,
      repo,
      files: [repo],
      output,
      init() {},
      backup: (_step, changed) => measure('node', [stillpoint, 'backup', repo, image, ...(cs === null ? [] : ['--chunk-size', String(cs)]), ...(changed ? ['--changed', changed] : [])], { STILLPOINT_PASSPHRASE: PASS }),
      restore: () => measure('node', [stillpoint, 'restore', repo, output], { STILLPOINT_PASSPHRASE: PASS }),
    });
  }
  const only = values['stillpoint-only'];
  const resticRepo = join(DIR, 'restic');
  const resticEnv = { RESTIC_PASSWORD: PASS, RESTIC_REPOSITORY: resticRepo, RESTIC_CACHE_DIR: join(DIR, 'restic-cache') };
  if (!only) tools.push({
    name: 'restic',
    repo: resticRepo,
    files: [resticRepo, resticEnv.RESTIC_CACHE_DIR],
    output: join(restoreOut, 'restic', image),
    init: () => void measure('restic', ['init', '--repository-version', '2'], resticEnv),
    backup: () => measure('restic', ['backup', '--compression', 'auto', '--quiet', image], resticEnv),
    restore: () => measure('restic', ['restore', 'latest', '--target', join(restoreOut, 'restic')], resticEnv),
  });
  const borgRepo = join(DIR, 'borg');
  const borgEnv = { BORG_PASSPHRASE: PASS, BORG_BASE_DIR: join(DIR, 'borg-home'), BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' };
  if (!only) tools.push({
    name: 'borg',
    repo: borgRepo,
    files: [borgRepo, borgEnv.BORG_BASE_DIR],
    output: join(restoreOut, 'borg', image.slice(1)),
    init: () => void measure('borg', ['init', '--encryption', 'repokey', borgRepo], borgEnv),
    backup: (step) => measure('borg', ['create', '--compression', 'zstd,3', `${borgRepo}::${step}`, image], borgEnv),
    restore: () => {
      mkdirSync(join(restoreOut, 'borg'), { recursive: true });
      return measure('borg', ['extract', `${borgRepo}::incremental-${INCREMENTALS}`], borgEnv, join(restoreOut, 'borg'));
    },
  });

  for (const p of [...tools.map((t) => t.repo), join(DIR, 'restic-cache'), join(DIR, 'borg-home'), restoreOut]) rmSync(p, { recursive: true, force: true });
  mkdirSync(restoreOut, { recursive: true });
  tools.forEach((t) => t.init());

  execFileSync('cp', ['--sparse=always', pristine, image]);
  const steps: Array<{ step: string; changed: string | null }> = [{ step: 'full', changed: null }];
  for (let i = 1; i <= INCREMENTALS; i++) steps.push({ step: `incremental-${i}`, changed: join(DIR, `changed-${i}.json`) });

  for (const { step, changed } of steps) {
    if (changed) {
      const ranges = await changeImage(image, Number(step.split('-')[1]));
      writeFileSync(changed, JSON.stringify(ranges));
      console.log(`${step}: changed ${ranges.length} scattered 1 MiB places (${((ranges.length * MiB) / SIZE * 100).toFixed(1)}%)`);
    }
    const states = REPEAT > 1 ? tools.map((t, i) => saveState(t.files, join(DIR, 'saved-state', String(i)))) : [];
    const befores = tools.map((t) => (existsSync(t.repo) ? du(t.repo) : 0));
    const stepRows = tools.map((t): Row => ({ tool: t.name, step, runs: [], peakMiB: 0, repoBytes: 0 }));
    timeRounds(stepRows, (i, round) => {
      const t = tools[i];
      if (round > 0) states[i].restore();
      warmUp();
      execFileSync('sync'); // no dirty pages of the image or another tool's repository left to flush
      execFileSync('sh', ['-c', `cat ${image} > /dev/null`]); // every tool reads the image from the page cache
      const m = t.backup(step, changed);
      const after = du(t.repo);
      stepRows[i].repoBytes = after;
      stepRows[i].note = `+${((after - befores[i]) / MiB).toFixed(1)} MiB`;
      console.log(`${t.name.padEnd(20)} ${step.padEnd(14)} ${m.seconds.toFixed(2)} s  ${(SIZE / MiB / m.seconds).toFixed(0)} MiB/s of disk  peak ${m.peakMiB.toFixed(0)} MiB  repo ${(after / MiB).toFixed(0)} MiB (+${((after - befores[i]) / MiB).toFixed(1)})`);
      return m;
    });
    states.forEach((s) => s.drop());
    rows.push(...stepRows);
  }
  // Two restores per tool. `restore`: its repository read into the page cache first, as the image
  // is before every backup (restic and borg write theirs through the cache, Stillpoint's packs go
  // around it, so without this the tools would start from different places). `restore-cold`:
  // every cache dropped first, as for a restore days after the backup (needs root).
  const cold = process.getuid?.() === 0;
  if (!cold) console.log('not root: the cold restores (caches dropped) are left out');
  const restoreSteps = cold ? ['restore', 'restore-cold'] : ['restore'];
  for (const step of restoreSteps) {
    const stepRows = tools.map((t): Row => ({ tool: t.name, step, runs: [], peakMiB: 0, repoBytes: du(t.repo) }));
    timeRounds(stepRows, (i) => {
      const t = tools[i];
      rmSync(t.output, { force: true }); // the restore before this one's
      warmUp();
      execFileSync('sync');
      if (step === 'restore') execFileSync('sh', ['-c', `find ${t.files.join(' ')} -type f -exec cat {} + > /dev/null`]);
      else writeFileSync('/proc/sys/vm/drop_caches', '3');
      const m = t.restore();
      console.log(`${t.name.padEnd(20)} ${step.padEnd(14)} ${m.seconds.toFixed(2)} s  peak ${m.peakMiB.toFixed(0)} MiB`);
      return m;
    });
    rows.push(...stepRows);
  }
  // Every tool restored the same bytes.
  for (const t of tools) {
    const same = spawnSync('cmp', ['-s', image, t.output]).status === 0;
    console.log(`${t.name}: restored image ${same ? 'matches' : 'DIFFERS FROM'} the source`);
    rmSync(t.output, { force: true });
  }

  // ---- table -------------------------------------------------------------------------------
  const get = (tool: string, step: string) => rows.find((r) => r.tool === tool && r.step === step)!;
  const refs = ['restic', 'borg'];
  console.log(`\n| tool | step | wall s, median of ${REPEAT} (range) | MiB/s of disk | peak RSS MiB | repo MiB | growth |`);
  console.log('|---|---|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const range = r.runs.length > 1 ? ` (${Math.min(...r.runs).toFixed(2)}–${Math.max(...r.runs).toFixed(2)})` : '';
    console.log(`| ${r.tool} | ${r.step} | ${median(r.runs).toFixed(2)}${range} | ${(SIZE / MiB / median(r.runs)).toFixed(0)} | ${r.peakMiB.toFixed(0)} | ${(r.repoBytes / MiB).toFixed(0)} | ${r.step.startsWith('restore') ? '' : r.note} |`);
  }
  function printRatios(): void {
    console.log(`\nRatios (Stillpoint vs the faster / smaller of restic and borg, medians of ${REPEAT} runs; targets from issue 8):`);
    console.log('| stillpoint | step | speed-up (target) | repo size or growth vs ref (target) | peak RSS MiB (<= 512) |');
    console.log('|---|---|---:|---:|---:|');
    for (const t of tools.filter((x) => x.name.startsWith('stillpoint'))) {
      for (const { step } of [...steps, ...restoreSteps.map((step) => ({ step }))]) {
        const mine = get(t.name, step);
        const fastest = Math.min(...refs.map((r) => median(get(r, step).runs)));
        const target = step === 'full' ? 3 : step.startsWith('restore') ? 2 : 10;
        let size = '';
        if (step === 'full') {
          const smallest = Math.min(...refs.map((r) => get(r, step).repoBytes));
          size = `${(mine.repoBytes / smallest).toFixed(3)} x smallest (<= 1.10)`;
        } else if (step.startsWith('incremental')) {
          const growth = (tool: string) => get(tool, step).repoBytes - get(tool, steps[steps.findIndex((s) => s.step === step) - 1].step).repoBytes;
          size = `${(growth(t.name) / growth('restic')).toFixed(3)} x restic's growth (<= 1.00)`;
        }
        console.log(`| ${t.name} | ${step} | ${(fastest / median(mine.runs)).toFixed(2)} x (>= ${target}) | ${size} | ${mine.peakMiB.toFixed(0)} |`);
      }
    }
  }
  if (!only) printRatios();
  if (!values.keep) {
    for (const p of [...tools.map((t) => t.repo), join(DIR, 'restic-cache'), join(DIR, 'borg-home'), restoreOut, image]) rmSync(p, { recursive: true, force: true });
  }
}

await main();
