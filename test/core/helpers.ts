import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { VmFacts } from '../../core/contracts/vm.ts';
import { Engine } from '../../core/engine/engine.ts';
import type { EngineHooks } from '../../core/engine/hooks.ts';
import { runJob, type JobSpec } from '../../core/engine/pipeline.ts';
import type { Limits } from '../../core/engine/semaphore.ts';
import { Journal } from '../../core/journal/journal.ts';
import { DirRepository } from '../fixtures/dir-repository.ts';
import filehost, { type FileHost, writeHost } from '../fixtures/plugins/filehost/index.ts';

export function tempDir(t: ExecutionContext, prefix = 'stillpoint-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Records every pipeline hook call as "<hook> <vm name>" (job-level hooks without a VM). */
export function recordHooks(engine: Engine): string[] {
  const log: string[] = [];
  const h = engine.hooks as EngineHooks;
  const vmName = (x: unknown): string => {
    const o = x as { vm?: { name?: string }; name?: string } | undefined;
    return o?.vm?.name ?? '';
  };
  const tapAsync = (name: keyof EngineHooks, pick: (...a: unknown[]) => string) =>
    (h[name] as unknown as { tapPromise(n: string, fn: (...a: unknown[]) => Promise<unknown>): void })
      .tapPromise('recorder', async (...a) => { log.push(`${name} ${pick(...a)}`.trim()); return a[0]; });
  const tapSync = (name: keyof EngineHooks, pick: (...a: unknown[]) => string) =>
    (h[name] as unknown as { tap(n: string, fn: (...a: unknown[]) => unknown): void })
      .tap('recorder', (...a) => { log.push(`${name} ${pick(...a)}`.trim()); return a[0]; });
  tapAsync('jobStart', () => '');
  tapAsync('vmsSelected', () => '');
  tapSync('prerequisites', (_r, vm) => (vm as VmFacts).name);
  tapSync('decision', (_d, r) => vmName(r));
  for (const n of ['beforeQuiesce', 'checkpointCreated', 'afterThaw', 'disksPresented', 'diskRead', 'diskStored', 'restorePointCommitted', 'beforeMerge', 'afterMerge'] as const) {
    tapAsync(n, (run) => vmName(run));
  }
  tapAsync('vmDone', (r) => vmName(r));
  tapAsync('volumeSnapshotCreated', (s) => (s as { volume: { name: string } }).volume.name);
  tapAsync('volumeSnapshotDeleted', (s) => (s as { volume: { name: string } }).volume.name);
  tapAsync('jobDone', () => '');
  return log;
}

export interface Setup {
  dir: string;
  engine: Engine;
  host: FileHost;
  repo: DirRepository;
  journal: Journal;
  hooks: string[];
  events(): string[];
  run(job?: Partial<JobSpec>, extra?: { limits?: Limits }): ReturnType<typeof runJob>;
}

export async function setup(
  t: ExecutionContext,
  vms: Array<Partial<VmFacts> & { name: string }>,
  options: Record<string, unknown> = {},
  repoOpts: ConstructorParameters<typeof DirRepository>[1] = {},
): Promise<Setup> {
  const dir = tempDir(t);
  writeHost(join(dir, 'host'), vms);
  const engine = new Engine();
  const plugin = filehost(filehost.optionsSchema.parse({ dir: join(dir, 'host'), ...options }), { configDir: dir, stateDir: join(dir, 'state') });
  await engine.use(plugin, 'test');
  const hooks = recordHooks(engine);
  const repo = new DirRepository(join(dir, 'repo'), repoOpts);
  const journal = new Journal(join(dir, 'state'));
  const driver = engine.driver({ name: 'lab', type: 'filehost', options: {} });
  return {
    dir, engine, repo, journal, hooks,
    host: (plugin as unknown as { host: FileHost }).host,
    events: () => !existsSync(join(dir, 'host', 'events.log')) ? [] : readFileSync(join(dir, 'host', 'events.log'), 'utf8').trim().split('\n').filter(Boolean),
    run: (job = {}, extra = {}) => runJob({
      engine, drivers: [driver], repository: repo, journal, limits: extra.limits,
      job: { name: 'nightly', vms: { include: ['*'], exclude: [] }, mode: 'onHost', consistency: 'prefer', ...job },
    }),
  };
}

/** Nothing left behind: no checkpoint, no frozen guest, no volume snapshot, no journal entry. */
export async function assertClean(t: ExecutionContext, s: Setup): Promise<void> {
  t.deepEqual(s.host.checkpoints().map((c) => c.name), [], 'no checkpoint left');
  t.deepEqual(s.host.frozen(), [], 'no frozen guest left');
  t.deepEqual(s.host.snapshots().map((x) => x.id), [], 'no volume snapshot left');
  t.deepEqual((await s.journal.entries()).map((e) => e.intent.kind), [], 'journal empty');
  t.deepEqual(s.repo.partial(), [], 'no half-written restore point');
}
