import { runJob } from '../../engine/pipeline.ts';
import { resolvePassphrase } from '../../repository/index.ts';
import type { JobResult } from '../../engine/types.ts';
import { EXIT, type CliCommand } from '../command.ts';
import { attachProgress, summary } from '../output.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = 'Usage: stillpoint backup [JOB...] [--config PATH] [--json]\n  Runs the named jobs (default: every job of the config).';

/** Exit status of several jobs: 0 all succeeded, 1 none did, 3 anything in between. */
export function exitStatus(results: JobResult[]): number {
  if (results.every((r) => r.status === 'success')) return EXIT.ok;
  if (results.every((r) => r.status === 'failed')) return EXIT.failure;
  return EXIT.partial;
}

export const backupCommand: CliCommand = {
  name: 'backup',
  summary: 'run backup jobs (all, or the ones named)',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, json: { type: 'boolean' } }, usage, io);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    return withSession(io, args.values.config, async (session) => {
      const names = args.positionals;
      const unknown = names.filter((n) => !session.job(n));
      if (unknown.length > 0) {
        io.stderr.write(`stillpoint: no job named ${unknown.map((n) => `"${n}"`).join(', ')} in ${session.loaded.filepath} (jobs: ${session.config.jobs.map((j) => j.name).join(', ')})\n`);
        return EXIT.usage;
      }
      const jobs = names.length > 0 ? names.map((n) => session.job(n)!) : session.config.jobs;
      const json = !!args.values.json;
      attachProgress(session.engine, io, json ? 'none' : io.stdout.isTTY ? 'tty' : 'plain');
      const controller = new AbortController();
      const onSignal = (sig: NodeJS.Signals) => {
        if (controller.signal.aborted) process.exit(130);
        io.stderr.write(`stillpoint: ${sig}: finishing the VMs in progress (thaw, merge, snapshot deletion); press again to stop at once\n`);
        controller.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const drivers = session.drivers();
        const repository = await session.repository({ create: true, loadIndex: true, writer: 'backup', cache: true });
        // What an off-host proxy needs to store into the repository itself.
        const repositoryAccess = {
          config: session.config.repository,
          passphrase: await resolvePassphrase(session.config.repository, { configDir: session.loaded.configDir, env: io.env }),
        };
        const results: JobResult[] = [];
        const pruned: Array<{ job: string; removed: number }> = [];
        for (const job of jobs) {
          if (controller.signal.aborted) break;
          const { config } = session;
          const result = await runJob({
            engine: session.engine, job: session.jobSpec(job), drivers, repository,
            repositoryName: config.repository.storage.type, repositoryAccess, journal: session.journal,
            limits: config.limits, freezeTimeoutMs: config.timeouts.freezeSeconds * 1000,
            thawTimeoutMs: config.timeouts.thawSeconds * 1000, signal: controller.signal,
          });
          results.push(result);
          const retention = job.retention ?? config.retention;
          let retentionLine = '';
          if (retention && result.status !== 'failed') {
            const p = await repository.prune(retention, { job: job.name });
            pruned.push({ job: job.name, removed: p.removed.length });
            retentionLine = `retention: removed ${p.removed.length} restore point(s) of job ${job.name}${p.removed.length ? ' (`stillpoint prune` frees their space)' : ''}\n`;
          }
          if (!json) io.stdout.write(`\n${summary(result)}\n${retentionLine}`);
        }
        if (json) io.stdout.write(`${JSON.stringify({ jobs: results, pruned }, null, 2)}\n`);
        return exitStatus(results);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
  },
};
