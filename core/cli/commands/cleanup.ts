import { EXIT, type CliCommand } from '../command.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = 'Usage: stillpoint cleanup [--config PATH] [--json]\n  Undoes what a crashed run left: thaws frozen guests, merges orphaned checkpoints, deletes orphaned volume snapshots.';

export const cleanupCommand: CliCommand = {
  name: 'cleanup',
  summary: 'reconcile the journal and undo what crashed runs left behind',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, json: { type: 'boolean' } }, usage, io, false);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    return withSession(io, args.values.config, async (session) => {
      const report = await session.cleanup();
      if (args.values.json) {
        io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      } else {
        for (const a of report.actions) io.stdout.write(`done: ${a}\n`);
        for (const s of report.skipped) io.stdout.write(`skipped: ${s}\n`);
        for (const p of report.problems) io.stdout.write(`PROBLEM: ${p}\n`);
        if (report.actions.length + report.problems.length + report.skipped.length === 0) io.stdout.write('nothing to clean up\n');
      }
      return report.problems.length === 0 ? EXIT.ok : EXIT.failure;
    });
  },
};
