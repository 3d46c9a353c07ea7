import type { GcResult, PruneResult } from '../../repository/index.ts';
import { EXIT, type CliCommand } from '../command.ts';
import { formatBytes } from '../output.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = `Usage: stillpoint prune [JOB...] [--dry-run] [--config PATH] [--json]
  Applies each job's retention (the job's "retention", else the config's) to its restore points,
  then collects garbage: the chunks, chunk tables and packs that no restore point references any
  more are deleted, and packs that are mostly unreferenced are rewritten without those chunks.
  This is what frees the space: \`stillpoint backup\` applies retention too, but removes only
  restore points. JOB: the jobs to apply retention to (default: every job); garbage collection
  covers the whole repository.
  Safe while a backup runs: the collection then deletes nothing and says so (run prune again later).
  --dry-run  say what would be removed and freed; remove nothing.
  Exit status: 0 done, 1 failure, 2 usage error, 3 collection deferred (a backup held the repository).`;

interface JobPrune {
  job: string;
  /** Null when neither the job nor the config has a retention: every restore point is kept. */
  retention: unknown;
  kept: number;
  removed: PruneResult['removed'];
}

export const pruneCommand: CliCommand = {
  name: 'prune',
  summary: 'apply retention and free the space of what no restore point needs (garbage collection)',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } }, usage, io);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    const dryRun = !!args.values['dry-run'];
    return withSession(io, args.values.config, async (session) => {
      const unknown = args.positionals.filter((n) => !session.job(n));
      if (unknown.length > 0) {
        io.stderr.write(`stillpoint: no job named ${unknown.map((n) => `"${n}"`).join(', ')} in ${session.loaded.filepath} (jobs: ${session.config.jobs.map((j) => j.name).join(', ')})\n`);
        return EXIT.usage;
      }
      const jobs = args.positionals.length > 0 ? args.positionals.map((n) => session.job(n)!) : session.config.jobs;
      const repo = await session.repository({ loadIndex: true, cache: true });
      const pruned: JobPrune[] = [];
      for (const job of jobs) {
        const retention = job.retention ?? session.config.retention;
        if (!retention) {
          pruned.push({ job: job.name, retention: null, kept: (await repo.list({ job: job.name })).length, removed: [] });
          continue;
        }
        const p = await repo.prune(retention, { job: job.name, dryRun });
        pruned.push({ job: job.name, retention, kept: p.kept.length, removed: p.removed });
      }
      const assumeRemoved = dryRun ? new Set(pruned.flatMap((p) => p.removed.map((r) => r.id))) : undefined;
      const gc = await repo.gc({ dryRun, assumeRemoved });
      if (args.values.json) {
        io.stdout.write(`${JSON.stringify({ dryRun, jobs: pruned, gc }, null, 2)}\n`);
      } else {
        io.stdout.write(report(pruned, gc, dryRun));
      }
      return gc.deferred ? EXIT.partial : EXIT.ok;
    });
  },
};

function report(pruned: JobPrune[], gc: GcResult, dryRun: boolean): string {
  const would = (done: string, plan: string) => (dryRun ? plan : done);
  const lines: string[] = [];
  for (const p of pruned) {
    if (p.retention === null) {
      lines.push(`job ${p.job}: no retention configured: all ${p.kept} restore point(s) kept`);
      continue;
    }
    lines.push(`job ${p.job}: ${would('removed', 'would remove')} ${p.removed.length} restore point(s), ${p.kept} kept`);
    for (const r of p.removed) lines.push(`  ${r.id}  VM ${r.vm}  ${r.time}`);
  }
  if (gc.deferred) {
    lines.push(`garbage collection deferred, nothing deleted: ${gc.reason ?? 'a backup holds the repository'} (run \`stillpoint prune\` again once it is done)`);
  } else if (gc.deletedChunks + gc.deletedTables + gc.deletedPacks + gc.repackedPacks === 0) {
    lines.push(`garbage collection: nothing ${would('was', 'would be')} unreferenced`);
  } else {
    lines.push(`garbage collection: ${would('deleted', 'would delete')} ${gc.deletedChunks} chunk(s) and ${gc.deletedTables} chunk table page(s); ` +
      `${gc.deletedPacks} pack(s) ${would('deleted', 'to delete')}, ${gc.repackedPacks} ${would('rewritten', 'to rewrite')}; ` +
      `${formatBytes(gc.packBytesFreed)} of packed chunks ${would('freed', 'to free')}`);
  }
  return `${lines.join('\n')}\n`;
}
