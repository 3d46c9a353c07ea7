import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { EXIT, type CliCommand } from '../command.ts';
import { parse } from './common.ts';

const usage = 'Usage: stillpoint init [FILE] [--force]\n  Writes a commented starter config (default: ./stillpoint.config.yaml).';

/** The starter config: config/default.yaml (also what the tests validate). */
export function starterConfig(): string {
  return readFileSync(new URL('../../../config/default.yaml', import.meta.url), 'utf8');
}

export const initCommand: CliCommand = {
  name: 'init',
  summary: 'write a commented starter config (YAML)',
  usage,
  async run(argv, io) {
    const args = parse(argv, { force: { type: 'boolean' } }, usage, io);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    if (args.positionals.length > 1) { io.stderr.write(`stillpoint init: give at most one FILE\n${usage}\n`); return EXIT.usage; }
    const file = resolve(io.cwd, args.positionals[0] ?? 'stillpoint.config.yaml');
    if (existsSync(file) && !args.values.force) {
      io.stderr.write(`stillpoint init: ${file} exists; use --force to overwrite it\n`);
      return EXIT.usage;
    }
    writeFileSync(file, starterConfig());
    io.stdout.write(`wrote ${file}\nnext: create a lab to try it (stillpoint lab init lab), check it (stillpoint check), back up (stillpoint backup)\n`);
    return EXIT.ok;
  },
};
