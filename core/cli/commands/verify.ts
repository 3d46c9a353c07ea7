import { EXIT, type CliCommand } from '../command.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = `Usage: stillpoint verify [RESTORE_POINT...] [--deep | --sample PERCENT] [--config PATH] [--json]
  Checks that every chunk the restore points reference exists; --deep reads and re-hashes them all,
  --sample a random percentage of them.`;

export const verifyCommand: CliCommand = {
  name: 'verify',
  summary: 'verify restore points (existence, or content with --deep/--sample)',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, deep: { type: 'boolean' }, sample: { type: 'string' }, json: { type: 'boolean' } }, usage, io);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    const sample = args.values.sample === undefined ? undefined : Number(args.values.sample);
    if (sample !== undefined && !(sample > 0 && sample <= 100)) {
      io.stderr.write(`stillpoint verify: --sample must be a percentage in (0, 100], got "${args.values.sample}"\n`);
      return EXIT.usage;
    }
    return withSession(io, args.values.config, async (session) => {
      const repo = await session.repository();
      const report = await repo.verify({
        deep: !!args.values.deep || sample !== undefined, samplePercent: sample,
        restorePoints: args.positionals.length > 0 ? await Promise.all(args.positionals.map(async (r) => (await repo.resolve(r)).id)) : undefined,
      });
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
