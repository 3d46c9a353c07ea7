import { EXIT, type CliCommand } from '../command.ts';
import { formatBytes, table } from '../output.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = 'Usage: stillpoint list [--job NAME] [--vm NAME] [--config PATH] [--json]\n  Lists the restore points in the repository, newest last.';

export const listCommand: CliCommand = {
  name: 'list',
  summary: 'list restore points',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, json: { type: 'boolean' }, job: { type: 'string' }, vm: { type: 'string' } }, usage, io, false);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    return withSession(io, args.values.config, async (session) => {
      const repo = await session.repository();
      const points = (await repo.list({ job: args.values.job, vm: args.values.vm })).sort((a, b) => a.time.localeCompare(b.time));
      if (args.values.json) {
        io.stdout.write(`${JSON.stringify(points, null, 2)}\n`);
        return EXIT.ok;
      }
      if (points.length === 0) {
        io.stdout.write('no restore points\n');
        return EXIT.ok;
      }
      io.stdout.write(`${table(['RESTORE POINT', 'TIME', 'JOB', 'VM', 'CONSISTENCY', 'DISKS', 'STORED'],
        points.map((p) => [p.id, p.time, p.job, p.vm.name, `${p.consistency.method} (${p.consistency.level})`, String(p.disks.length), formatBytes(p.bytesStored)]))}\n`);
      return EXIT.ok;
    });
  },
};
