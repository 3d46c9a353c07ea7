import { EXIT, type CliCommand } from '../command.ts';
import { progressMode, ProgressWriter, rateAndEta } from '../output.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = `Usage: stillpoint verify [RESTORE_POINT...] [--vm NAME] [--deep | --sample PERCENT] [--config PATH] [--json]
  Checks that every chunk the restore points reference exists (quick); --deep reads, decrypts, decompresses
  and re-hashes them all, --sample PERCENT (e.g. 10 or 10%) a random sample of them. Every damaged restore
  point is named with the disk, offset and chunk that is damaged or missing.
  RESTORE_POINT is an id, a unique prefix of one, or "latest" with --vm; default: every restore point
  (of the VM given with --vm).
  Exit status: 0 all checked chunks are sound, 1 damage found (or verification failed), 2 usage error.`;

export const verifyCommand: CliCommand = {
  name: 'verify',
  summary: 'verify restore points (existence, or content with --deep/--sample)',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, deep: { type: 'boolean' }, sample: { type: 'string' }, vm: { type: 'string' }, json: { type: 'boolean' } }, usage, io);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    const sample = args.values.sample === undefined ? undefined : Number(args.values.sample.trim().replace(/%$/, '') || NaN);
    if (sample !== undefined && !(sample > 0 && sample <= 100)) {
      io.stderr.write(`stillpoint verify: --sample must be a percentage in (0, 100], got "${args.values.sample}"\n`);
      return EXIT.usage;
    }
    return withSession(io, args.values.config, async (session) => {
      const repo = await session.repository();
      const vm = args.values.vm;
      const restorePoints = args.positionals.length > 0
        ? await Promise.all(args.positionals.map(async (r) => (await repo.resolve(r, vm)).id))
        : vm !== undefined ? (await repo.manifests({ vm })).map((m) => m.id) : undefined;
      if (restorePoints && restorePoints.length === 0) {
        io.stderr.write(`stillpoint verify: VM ${vm} has no restore point (list them with \`stillpoint list\`)\n`);
        return EXIT.failure;
      }
      // Live progress of the chunk checks on a terminal only; the report is what stdout is for.
      const w = new ProgressWriter(io.stdout, progressMode(io.stdout, !!args.values.json) === 'tty' ? 'tty' : 'none');
      const t0 = Date.now();
      let lastDraw = 0;
      const report = await repo.verify({
        deep: !!args.values.deep || sample !== undefined, samplePercent: sample, restorePoints,
        onProgress: (p) => {
          const now = Date.now();
          if (now - lastDraw < 100 && p.done < p.total) return;
          lastDraw = now;
          const { pct, eta } = rateAndEta(p.done, p.total, t0, now);
          w.live(`verify: ${p.phase} ${p.done} of ${p.total} ${pct} ${eta}`);
        },
      }).finally(() => w.end());
      if (args.values.json) {
        io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      } else {
        io.stdout.write(`verify (${report.mode}): ${report.restorePoints} restore point(s), ${report.chunksChecked} of ${report.chunksReferenced} chunk(s) checked: ${report.ok ? 'ok' : 'DAMAGED'}\n`);
        for (const d of report.damaged) {
          io.stdout.write(`  restore point ${d.id} (job ${d.job}, VM ${d.vm}):\n`);
          for (const p of d.problems) io.stdout.write(`    ${p.disk ? `disk ${p.disk}` : "manifest"}${p.offset !== undefined ? ` at ${p.offset}` : ""}${p.chunk ? ` chunk ${p.chunk}` : ""}: ${p.problem}\n`);
        }
      }
      return report.ok ? EXIT.ok : EXIT.failure;
    });
  },
};
