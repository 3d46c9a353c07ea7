import { resolve } from 'node:path';
import { EXIT, type CliCommand } from '../command.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = `Usage: stillpoint restore RESTORE_POINT --to DIR [--vm NAME] [--disk ID] [--format raw|vhdx] [--overwrite] [--config PATH]
  RESTORE_POINT is an id (or a unique prefix of one), or "latest" with --vm.
  Writes every disk (or the one named with --disk) into DIR as a raw image (default) or a dynamic VHDX.`;

export const restoreCommand: CliCommand = {
  name: 'restore',
  summary: 'restore the disks of a restore point into a folder',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, to: { type: 'string' }, vm: { type: 'string' }, disk: { type: 'string' }, format: { type: 'string' }, overwrite: { type: 'boolean' } }, usage, io);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    const format = args.values.format ?? 'raw';
    if (args.positionals.length !== 1 || !args.values.to || (format !== 'raw' && format !== 'vhdx')) {
      io.stderr.write(`stillpoint restore: ${args.positionals.length !== 1 ? 'give exactly one RESTORE_POINT' : !args.values.to ? '--to DIR is required' : `--format must be raw or vhdx, got "${format}"`}\n${usage}\n`);
      return EXIT.usage;
    }
    return withSession(io, args.values.config, async (session) => {
      const repo = await session.repository();
      const to = resolve(io.cwd, args.values.to!);
      const opts = { vm: args.values.vm, format: format as 'raw' | 'vhdx', overwrite: !!args.values.overwrite };
      if (args.values.disk) {
        const { restoredDiskFileName } = await import('../../repository/index.ts');
        const path = resolve(to, restoredDiskFileName(args.values.disk, opts.format));
        const { bytes } = await repo.restoreDisk(args.positionals[0], args.values.disk, path, opts);
        io.stdout.write(`restored disk ${args.values.disk} to ${path} (${bytes} bytes)\n`);
      } else {
        for (const d of await repo.restoreVm(args.positionals[0], to, opts)) io.stdout.write(`restored disk ${d.disk} to ${d.path}\n`);
      }
      return EXIT.ok;
    });
  },
};
