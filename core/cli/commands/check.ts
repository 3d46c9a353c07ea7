import { assessVm, newRunId, selectVms } from '../../engine/pipeline.ts';
import type { Decision, JobContext, PrerequisiteReport } from '../../engine/types.ts';
import { EXIT, type CliCommand } from '../command.ts';
import { configOption, parse, withSession } from './common.ts';

const usage = 'Usage: stillpoint check [JOB...] [--config PATH] [--json]\n  Prints the prerequisites of every VM of the jobs and the method a backup would use, and why. Changes nothing.';

export const checkCommand: CliCommand = {
  name: 'check',
  summary: 'prerequisites report: each condition per VM and the backup method it leads to',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, json: { type: 'boolean' } }, usage, io);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    return withSession(io, args.values.config, async (session) => {
      const unknown = args.positionals.filter((n) => !session.job(n));
      if (unknown.length > 0) {
        io.stderr.write(`stillpoint: no job named ${unknown.map((n) => `"${n}"`).join(', ')} (jobs: ${session.config.jobs.map((j) => j.name).join(', ')})\n`);
        return EXIT.usage;
      }
      const jobs = args.positionals.length > 0 ? args.positionals.map((n) => session.job(n)!) : session.config.jobs;
      const { inventory } = await session.inventory();
      const drivers = new Map(session.drivers().map((d) => [d.name, d]));
      const out: Array<{ job: string; policy: string; mode: string; vms: Array<{ vm: string; host: string; report: PrerequisiteReport['conditions']; decision: Decision }> }> = [];
      let good = 0;
      let bad = 0;
      for (const job of jobs) {
        const spec = session.jobSpec(job);
        const ctx: JobContext = { runId: newRunId(), job: job.name, policy: job.consistency, mode: job.mode, startedAt: new Date().toISOString(), inventory, signal: new AbortController().signal };
        const entry = { job: job.name, policy: job.consistency, mode: job.mode, vms: [] as (typeof out)[number]['vms'] };
        for (const vm of selectVms(inventory.vms, spec.vms)) {
          const { report, decision } = await assessVm(session.engine, drivers.get(vm.driver)!, vm, ctx);
          entry.vms.push({ vm: vm.name, host: vm.host, report: report.conditions, decision });
          if (decision.method === 'fail' || decision.method === 'skip') bad++;
          else good++;
        }
        out.push(entry);
      }
      if (args.values.json) {
        io.stdout.write(`${JSON.stringify({ jobs: out }, null, 2)}\n`);
      } else {
        for (const j of out) {
          io.stdout.write(`job ${j.job} (consistency ${j.policy}, mode ${j.mode})${j.vms.length === 0 ? ': selects no VM' : ''}\n`);
          for (const v of j.vms) {
            io.stdout.write(`  VM ${v.vm} on ${v.host}\n`);
            const w = Math.max(...v.report.map((c) => c.label.length));
            const vw = Math.max(...v.report.map((c) => c.value.length));
            for (const c of v.report) {
              io.stdout.write(`    ${c.ok ? 'ok  ' : 'FAIL'} ${c.label.padEnd(w)}  ${c.value.padEnd(vw)}  needs ${c.required}${c.ok || !c.detail ? '' : ` - ${c.detail}`}\n`);
            }
            io.stdout.write(`    => ${v.decision.method}: ${v.decision.reason}\n`);
          }
        }
      }
      return bad === 0 ? EXIT.ok : good === 0 ? EXIT.failure : EXIT.partial;
    });
  },
};
