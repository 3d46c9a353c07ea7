import { relative } from 'node:path';
import { parseArgs } from 'node:util';
import { StillpointError } from '../../errors.ts';
import { EXIT, type CliCommand } from '../command.ts';

const usage = `Usage: stillpoint lab init DIR [--force]

Creates a demo lab in DIR: simulated Hyper-V hosts (a 2019 host and a two-node cluster whose
functional level is still 8) with running VMs on real VHDX files, and a Stillpoint config file
whose default job backs them all up into DIR/repository:

  win-app     Windows, configuration 9.0, VSS integration service running   -> online
  linux-db    Linux with the Hyper-V VSS daemon                              -> online
  linux-web   Linux without the VSS daemon                                   -> crash-consistent
  legacy-erp  configuration 5.0                                              -> crash-consistent
  clu-files   on the cluster with functional level 8                         -> crash-consistent

Options:
  --force   write the demo into DIR even if it is not empty
`;

export const labInitCommand: CliCommand = {
  name: 'lab init',
  summary: 'Create a demo lab (simulated Hyper-V hosts with running VMs) and its config',
  usage,
  async run(argv, io) {
    let parsed;
    try {
      parsed = parseArgs({ args: argv, allowPositionals: true, options: { force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
    } catch (error) {
      io.stderr.write(`stillpoint lab init: ${(error as Error).message}\n\n${usage}`);
      return EXIT.usage;
    }
    if (parsed.values.help) { io.stdout.write(usage); return EXIT.ok; }
    if (parsed.positionals.length !== 1) {
      io.stderr.write(`stillpoint lab init: give exactly one directory\n\n${usage}`);
      return EXIT.usage;
    }
    const { initDemoLab } = await import('../../../plugins/lab/demo.ts');
    const { resolve } = await import('node:path');
    try {
      const result = await initDemoLab(resolve(io.cwd, parsed.positionals[0]), { force: parsed.values.force });
      const rel = relative(io.cwd, result.dir);
      const shown = rel === '' ? '.' : rel.startsWith('..') ? result.dir : rel;
      io.stdout.write([
        `Created a demo lab in ${result.dir}`,
        `  lab:    ${result.labFile} (hosts, cluster, volumes, VMs; edit freely)`,
        `  config: ${result.configFile}`,
        `  VMs:    ${result.vms.join(', ')}`,
        '',
        'Back them all up:',
        `  cd ${shown} && stillpoint backup`,
        '',
      ].join('\n'));
      return EXIT.ok;
    } catch (error) {
      io.stderr.write(`stillpoint lab init: ${error instanceof StillpointError ? error.message : (error as Error).stack}\n`);
      return EXIT.failure;
    }
  },
};
