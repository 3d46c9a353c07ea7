import { createWriteStream } from 'node:fs';
import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { rm } from 'node:fs/promises';
import type { Manifest, Repository, RestoreFormat, RestoreProgress } from '../../repository/index.ts';
import { ConfigError, CorruptImageError, StillpointError } from '../../errors.ts';
import { EXIT, type CliCommand, type CliIo } from '../command.ts';
import { formatBytes, formatDuration, progressMode, ProgressWriter, rateAndEta, table } from '../output.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = `Usage: stillpoint restore RESTORE_POINT [--vm NAME] [--config PATH] [--json]
         --to DIR [--disk ID] [--format raw|vhdx] [--overwrite]   every disk (or one) into DIR
         --disk ID -o FILE [--format raw|vhdx] [--overwrite]       one disk to FILE
         --disk ID -o - [--range OFFSET:LENGTH]                    one disk, or a byte range of it, to stdout
  RESTORE_POINT is an id (or a unique prefix of one), or "latest" with --vm.
  Disks are written as raw images (default) or dynamic VHDX files (--format vhdx, or a FILE ending in .vhdx).
  --range OFFSET:LENGTH   bytes [OFFSET, OFFSET+LENGTH) of the disk; sizes are bytes, hex (0x200000) or with
                          a binary suffix (512K, 1M, 2G); "OFFSET:" runs to the end of the disk. Writes to
                          stdout unless -o FILE is given.
  --disk may be left out when the VM has one disk. Progress (bytes, rate, ETA) goes to stdout, or to stderr
  when stdout carries the data; on a terminal it is redrawn in place, otherwise printed as plain lines.`;

const SUFFIX: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };

/** A byte count: `4096`, `0x200000`, `512K`, `1M`, `1MiB`, `2g`. Throws a message naming `what`. */
export function parseSize(text: string, what: string): number {
  const m = /^(0x[0-9a-f]+|\d+)\s*(?:([kmgtp])(?:i?b)?|b)?$/i.exec(text.trim());
  const n = m ? Number(m[1]) * SUFFIX[(m[2] ?? '').toLowerCase()] : NaN;
  if (!m || !Number.isSafeInteger(n)) {
    throw new Error(`${what} must be a byte count like 4096, 0x200000, 512K or 1M, got "${text}"`);
  }
  return n;
}

/** `OFFSET:LENGTH` (LENGTH may be empty: to the end of the disk). */
export function parseRange(text: string): { offset: number; length?: number } {
  const colon = text.indexOf(':');
  if (colon < 0) throw new Error(`--range must be OFFSET:LENGTH (e.g. 1M:4096 or 0x200000:64K), got "${text}"`);
  const offset = parseSize(text.slice(0, colon), '--range OFFSET');
  const rest = text.slice(colon + 1);
  return rest.trim() === '' ? { offset } : { offset, length: parseSize(rest, '--range LENGTH') };
}

interface RestoredDisk {
  disk: string;
  /** The file written, or null for stdout. */
  path: string | null;
  format: RestoreFormat;
  /** Bytes written (the disk's size, or the range's length). */
  bytes: number;
  range?: { offset: number; length: number };
  durationMs: number;
}

/** Per-disk progress of a restore, fed by the repository's `onProgress`: start and done lines, live bytes/rate/ETA on a terminal. */
class RestoreProgressView {
  private started = new Map<string, number>();
  private finished = new Map<string, number>();
  private lastDraw = 0;
  constructor(private readonly w: ProgressWriter, private readonly label: string, private readonly target: (disk: string) => string) {}

  readonly onProgress = (p: RestoreProgress): void => {
    const now = Date.now();
    let t0 = this.started.get(p.disk);
    const first = t0 === undefined;
    if (t0 === undefined) {
      this.started.set(p.disk, (t0 = now));
      if (this.w.mode === 'plain') this.w.say(`${this.label}: restoring disk ${p.disk} (${formatBytes(p.bytesTotal)}) to ${this.target(p.disk)}`);
    }
    const complete = p.bytesDone >= p.bytesTotal;
    if (this.w.mode === 'tty' && (first || complete || now - this.lastDraw >= 100)) {
      this.lastDraw = now;
      const { pct, rate, eta } = rateAndEta(p.bytesDone, p.bytesTotal, t0, now);
      this.w.live(`${this.label} ${p.disk}: ${pct} restored ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}, ${rate} ${eta}`.trimEnd());
    }
    if (complete && !this.finished.has(p.disk)) this.finished.set(p.disk, now);
  };

  /** When the disk started (first progress), or `fallback`. */
  startOf(disk: string, fallback: number): number {
    return this.started.get(disk) ?? fallback;
  }

  done(r: RestoredDisk): void {
    this.w.say(`restored disk ${r.disk} to ${r.path ?? 'standard output'}: ${formatBytes(r.bytes)} in ${formatDuration(r.durationMs)} (${rateAndEta(r.bytes, r.bytes, 0, r.durationMs).rate})`);
  }
}

function pickDisk(manifest: Manifest, disk: string | undefined): Manifest['disks'][number] {
  const names = manifest.disks.map((d) => JSON.stringify(d.id)).join(', ') || '(none)';
  if (disk === undefined) {
    if (manifest.disks.length === 1) return manifest.disks[0];
    throw new UsageProblem(`restore point ${manifest.id} of VM ${manifest.vm.name} has ${manifest.disks.length} disks (${names}): name one with --disk`);
  }
  const found = manifest.disks.find((d) => d.id === disk);
  if (!found) throw new UsageProblem(`restore point ${manifest.id} of VM ${manifest.vm.name} has no disk ${JSON.stringify(disk)}; its disks are ${names}`);
  return found;
}

/** A mistake in the command line found once the restore point is known (exit status 2). */
class UsageProblem extends Error {}

export const restoreCommand: CliCommand = {
  name: 'restore',
  summary: 'restore disks of a restore point: into a folder, to a file, or a byte range to stdout',
  usage,
  async run(argv, io) {
    const args = parse(argv, {
      ...configOption, to: { type: 'string' }, output: { type: 'string', short: 'o' }, vm: { type: 'string' }, disk: { type: 'string' },
      format: { type: 'string' }, range: { type: 'string' }, overwrite: { type: 'boolean' }, json: { type: 'boolean' },
    }, usage, io);
    if (!args) return EXIT.usage;
    const v = args.values;
    if (v.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    const fail = (msg: string) => { io.stderr.write(`stillpoint restore: ${msg}\n${usage}\n`); return EXIT.usage; };
    if (args.positionals.length !== 1) return fail('give exactly one RESTORE_POINT');
    if (v.format !== undefined && v.format !== 'raw' && v.format !== 'vhdx') return fail(`--format must be raw or vhdx, got "${v.format}"`);
    let range: { offset: number; length?: number } | undefined;
    try {
      range = v.range === undefined ? undefined : parseRange(v.range);
    } catch (e) {
      return fail((e as Error).message);
    }
    const output = v.output ?? (range ? '-' : undefined);
    if (output !== undefined && v.to !== undefined) return fail('give either --to DIR or -o FILE, not both');
    if (output === undefined && v.to === undefined) return fail('say where to restore: --to DIR, or -o FILE (-o - for stdout)');
    if (range && v.to !== undefined) return fail('--range writes to stdout or to -o FILE, not into --to DIR');
    const toStdout = output === '-';
    if ((toStdout || range) && v.format === 'vhdx') return fail(`${range ? 'a byte range' : 'standard output'} is raw data; --format vhdx needs -o FILE or --to DIR`);
    if (toStdout && v.json) return fail('--json cannot be used with -o - (standard output carries the disk data)');
    if (toStdout && io.stdout.isTTY) return fail('standard output is a terminal: redirect it to a file or a pipe (or use -o FILE)');

    // Progress goes where the data does not.
    const progressStream = (toStdout ? io.stderr : io.stdout) as Writable & { isTTY?: boolean };
    const w = new ProgressWriter(progressStream, progressMode(progressStream, !!v.json));

    return withSession(io, v.config, async (session) => {
      const repo = await session.repository({ loadIndex: true, cache: true });
      let manifest: Manifest | undefined;
      let results: RestoredDisk[] = [];
      /** The disk being restored, so that an error names the restore point and disk. */
      let current: string | undefined;
      try {
        manifest = await repo.resolve(args.positionals[0], v.vm);
        const label = `${manifest.vm.name} ${manifest.id}`;
        if (output !== undefined) {
          const disk = pickDisk(manifest, v.disk);
          current = disk.id;
          if (range || toStdout) {
            results = [await restoreRangeTo(repo, manifest, disk, range ?? { offset: 0 }, output, { io, w, label, overwrite: !!v.overwrite })];
          } else {
            const path = resolve(io.cwd, output);
            const format: RestoreFormat = (v.format as RestoreFormat | undefined) ?? (path.toLowerCase().endsWith('.vhdx') ? 'vhdx' : 'raw');
            const view = new RestoreProgressView(w, label, () => path);
            const t = Date.now();
            const { bytes } = await repo.restoreDisk(manifest.id, disk.id, path, { format, overwrite: !!v.overwrite, onProgress: view.onProgress });
            results = [{ disk: disk.id, path, format, bytes, durationMs: Date.now() - view.startOf(disk.id, t) }];
            view.done(results[0]);
          }
        } else {
          const { restoredDiskFileName } = await import('../../repository/index.ts');
          const to = resolve(io.cwd, v.to!);
          const format = (v.format ?? 'raw') as RestoreFormat;
          const pathOf = (d: string) => resolve(to, restoredDiskFileName(d, format));
          const view = new RestoreProgressView(w, label, pathOf);
          const opts = { format, overwrite: !!v.overwrite, onProgress: view.onProgress };
          const t = Date.now();
          if (v.disk !== undefined) {
            const disk = pickDisk(manifest, v.disk);
            current = disk.id;
            const { bytes } = await repo.restoreDisk(manifest.id, disk.id, pathOf(disk.id), opts);
            results = [{ disk: disk.id, path: pathOf(disk.id), format, bytes, durationMs: Date.now() - view.startOf(disk.id, t) }];
            view.done(results[0]);
          } else {
            // Every disk: each one's end is seen when the next one starts (or the restore ends).
            results = [];
            let prev = t;
            const onProgress = (p: RestoreProgress) => {
              current = p.disk;
              view.onProgress(p);
              if (p.bytesDone >= p.bytesTotal) {
                const end = Date.now();
                const r: RestoredDisk = { disk: p.disk, path: pathOf(p.disk), format, bytes: p.bytesTotal, durationMs: end - view.startOf(p.disk, prev) };
                prev = end;
                results.push(r);
                view.done(r);
                current = undefined;
              }
            };
            const written = await repo.restoreVm(manifest.id, to, { ...opts, onProgress });
            // Disks of size 0 report no progress.
            for (const d of written) if (!results.some((r) => r.disk === d.disk)) results.push({ disk: d.disk, path: d.path, format, bytes: 0, durationMs: 0 });
          }
        }
      } catch (e) {
        w.end();
        if (e instanceof UsageProblem) { io.stderr.write(`stillpoint restore: ${e.message}\n`); return EXIT.usage; }
        // The reader of standard output stopped reading (`restore -o - | head`): nothing is wrong.
        if (toStdout && (e as NodeJS.ErrnoException).code === 'EPIPE') return EXIT.ok;
        if (manifest && !(e instanceof ConfigError) && e instanceof Error && !e.message.includes(`restore point ${manifest.id}`)) {
          // Name the restore point and disk (e.g. with a damaged chunk, which the error names).
          const m = manifest;
          const disk = current ?? m.disks.find((d) => !results.some((r) => r.disk === d.id))?.id;
          const where = `restore point ${m.id} (VM ${m.vm.name})${disk ? `, disk ${disk}` : ''}`;
          throw e instanceof CorruptImageError ? new CorruptImageError(e.message, { where, cause: e }) : new StillpointError(e.message, { where, cause: e });
        }
        throw e;
      }
      w.end();
      if (!manifest) return EXIT.failure;
      if (v.json) {
        io.stdout.write(`${JSON.stringify({ restorePoint: manifest.id, vm: manifest.vm, time: manifest.time, disks: results }, null, 2)}\n`);
      } else if (!toStdout) {
        const total = results.reduce((s, r) => s + r.bytes, 0);
        const ms = results.reduce((s, r) => s + r.durationMs, 0);
        io.stdout.write(`\nrestore point ${manifest.id} (VM ${manifest.vm.name}, ${manifest.time}): ${results.length} disk(s), ${formatBytes(total)} in ${formatDuration(ms)}\n`);
        io.stdout.write(`${table(['DISK', 'FORMAT', 'SIZE', 'DURATION', 'RATE', 'FILE'], results.map((r) => [
          r.disk, r.range ? `raw bytes ${r.range.offset}..${r.range.offset + r.range.length}` : r.format, formatBytes(r.bytes),
          formatDuration(r.durationMs), rateAndEta(r.bytes, r.bytes, 0, r.durationMs).rate, r.path ?? '-',
        ]))}\n`);
      }
      return EXIT.ok;
    });
  },
};

/** A byte range (or the whole disk) as raw bytes to stdout or to a file. */
async function restoreRangeTo(
  repo: Repository,
  manifest: Manifest,
  disk: Manifest['disks'][number],
  range: { offset: number; length?: number },
  output: string,
  ctx: { io: CliIo; w: ProgressWriter; label: string; overwrite: boolean },
): Promise<RestoredDisk> {
  const length = range.length ?? disk.virtualSize - range.offset;
  if (range.offset > disk.virtualSize || range.offset + length > disk.virtualSize || length < 0) {
    throw new UsageProblem(`--range ${range.offset}:${range.length ?? ''} (bytes ${range.offset}..${range.offset + length}) is outside disk ${JSON.stringify(disk.id)} of restore point ${manifest.id}, which has ${disk.virtualSize} bytes`);
  }
  const path = output === '-' ? null : resolve(ctx.io.cwd, output);
  let out: Writable;
  if (path === null) {
    out = ctx.io.stdout;
  } else {
    out = createWriteStream(path, { flags: ctx.overwrite ? 'w' : 'wx', mode: 0o600 });
    await new Promise<void>((res, rej) => { out.once('open', () => res()); out.once('error', (e: NodeJS.ErrnoException) => rej(e.code === 'EEXIST' ? new Error(`${path}: the target file exists. choose another path or pass --overwrite`) : e)); });
  }
  const view = new RestoreProgressView(ctx.w, ctx.label, () => path ?? 'standard output');
  const t = Date.now();
  let bytes: number;
  try {
    ({ bytes } = await repo.restoreRange(manifest.id, disk.id, { offset: range.offset, length }, out, { onProgress: view.onProgress }));
  } catch (error) {
    if (path !== null) {
      out.destroy();
      await rm(path, { force: true });
    }
    throw error;
  }
  if (path !== null) {
    out.end();
    await finished(out);
  } else {
    // Everything handed to stdout is written before the command returns (and the process exits).
    await new Promise<void>((res, rej) => out.write('', (err) => (err ? rej(err) : res())));
  }
  const r: RestoredDisk = { disk: disk.id, path, format: 'raw', bytes, durationMs: Date.now() - view.startOf(disk.id, t) };
  if (range.offset !== 0 || length !== disk.virtualSize) r.range = { offset: range.offset, length };
  view.done(r);
  return r;
}
