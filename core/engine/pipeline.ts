import { randomBytes } from 'node:crypto';
import createDebug from 'debug';
import type { Checkpoint, HypervisorDriver } from '../contracts/driver.ts';
import type { FrozenGuest, QuiesceOutcome } from '../contracts/quiescer.ts';
import type { OpenDisk } from '../contracts/reader.ts';
import type { VolumeRef } from '../contracts/snapshot.ts';
import type { Inventory, VmFacts } from '../contracts/vm.ts';
import { StillpointError } from '../errors.ts';
import type { Journal, JournalEntry, JournalVm } from '../journal/journal.ts';
import { checkpointName, reconcile } from '../journal/reconcile.ts';
import { changedDataBytes, readMode, VmChangeTracking, type DiskChanges } from './change-tracking.ts';
import type { Engine } from './engine.ts';
import { decide, evaluatePrerequisites, type QuiescingFacts } from './prerequisites.ts';
import type { BackupRepository, RestorePointWriter } from './repository-port.ts';
import { DEFAULT_LIMITS, Limiters, Semaphore, type Limits } from './semaphore.ts';
import { disksToRead, type RepositoryAccess, type Transport, type TransportSession, type TransportSink } from './transport.ts';
import type {
  ConsistencyPolicy, Decision, DiskResult, PrerequisiteReport, GroupRun, JobContext, JobResult, PresentedDisk, TransportMode, VmResult, VmRun,
} from './types.ts';

const debug = createDebug('stillpoint:pipeline');

/** Which VMs a job backs up: glob patterns (`*`, `?`) on VM names, or `id:<vm id>`. */
export interface VmSelector {
  include: string[];
  exclude: string[];
  /** Only VMs on these hosts (default: every host). */
  hosts?: string[];
  /** Only VMs of these driver instances (default: every driver). */
  drivers?: string[];
  /** Any further condition (e.g. the config's per-driver `hosts`). */
  where?: (vm: VmFacts) => boolean;
}

export interface JobSpec {
  name: string;
  vms: VmSelector;
  mode: TransportMode;
  consistency: ConsistencyPolicy;
  /** Proxy for off-host reading. */
  proxy?: string;
}

export interface RunJobOptions {
  engine: Engine;
  job: JobSpec;
  drivers: HypervisorDriver[];
  repository: BackupRepository;
  /** Name of the repository (key of the per-repository limit). */
  repositoryName?: string;
  /** How another process (an off-host proxy) opens the repository; without it transports store through this process. */
  repositoryAccess?: RepositoryAccess;
  journal: Journal;
  limits?: Limits;
  /**
   * Restore points written at once (default: the per-repository limit, `limits.perRepository`). The
   * repository's writer lock belongs to the writing process, so restore points of several VMs are
   * written concurrently and no VM waits with its checkpoint held for another VM's store.
   */
  restorePointWriters?: number;
  /** How long a guest may stay frozen (engine quiescing); the quiescer enforces it even if we die. */
  freezeTimeoutMs?: number;
  /** How long to wait for a thaw to be confirmed. */
  thawTimeoutMs?: number;
  signal?: AbortSignal;
}

export const DEFAULT_FREEZE_TIMEOUT_MS = 20_000;
export const DEFAULT_THAW_TIMEOUT_MS = 30_000;

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

export function newRunId(now = new Date()): string {
  return `${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${randomBytes(3).toString('hex')}`;
}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

function matches(vm: VmFacts, pattern: string): boolean {
  return pattern.startsWith('id:') ? vm.id === pattern.slice(3) : globToRegExp(pattern).test(vm.name);
}

/** The VMs of the inventory a selector picks, in inventory order. */
export function selectVms(vms: VmFacts[], selector: VmSelector): VmFacts[] {
  return vms.filter((vm) =>
    selector.include.some((p) => matches(vm, p)) &&
    !selector.exclude.some((p) => matches(vm, p)) &&
    (!selector.hosts || selector.hosts.includes(vm.host)) &&
    (!selector.drivers || selector.drivers.includes(vm.driver)) &&
    (!selector.where || selector.where(vm)));
}

/** One VM's state while it goes through the pipeline. */
class VmTask {
  readonly started = Date.now();
  error: string | undefined;
  readonly warnings: string[] = [];
  disks: DiskResult[] = [];
  restorePoint: string | undefined;
  /** The reference point the committed restore point keeps (driver's id). */
  referencePoint: string | undefined;
  checkpointEntry: JournalEntry | undefined;
  merged = false;
  constructor(readonly run: VmRun) {}
  get failed(): boolean { return this.error !== undefined; }
  /** The first failure is the one reported; later ones become warnings. */
  fail(e: unknown): void {
    if (this.error === undefined) this.error = message(e);
    else this.warnings.push(message(e));
  }
  get journalVm(): JournalVm {
    const { vm } = this.run;
    return { id: vm.id, name: vm.name, driver: vm.driver, host: vm.host };
  }
}

/**
 * Run one job. Reads top to bottom in DESIGN.md order: reconcile -> inventory -> per VM
 * prerequisites -> decision; then per transport group: quiesce -> checkpoint -> thaw (every VM of the
 * group) -> [one volume snapshot per off-host group] -> present -> read -> store -> merge (per VM) ->
 * [snapshot deleted once the group's last VM is done]. One VM's failure never stops the others; thaw
 * and merge run on every path. Never rejects for a VM's failure: the result says what happened.
 */
export async function runJob(options: RunJobOptions): Promise<JobResult> {
  const { engine, job, drivers, repository, journal } = options;
  const { hooks } = engine;
  const limiters = new Limiters(options.limits ?? DEFAULT_LIMITS);
  const freezeTimeoutMs = options.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
  const thawTimeoutMs = options.thawTimeoutMs ?? DEFAULT_THAW_TIMEOUT_MS;
  const repositoryKey = options.repositoryName ?? 'repository';
  const signal = options.signal ?? new AbortController().signal;
  const startedAt = new Date();
  const runId = newRunId(startedAt);
  const result: JobResult = { runId, job: job.name, startedAt: startedAt.toISOString(), durationMs: 0, vms: [], status: 'failed', reconciled: [] };
  const driverByName = new Map(drivers.map((d) => [d.name, d]));
  // restore points open at once (each VM holds its checkpoint until its restore point is written)
  const restorePointWriters = new Semaphore(options.restorePointWriters ?? limiters.limits.perRepository);

  await journal.beginRun({ runId, job: job.name, startedAt: result.startedAt });
  try {
    // ---- the inventory, and the reconcile of what earlier runs left -------------------------
    const inventories = new Map<string, Inventory>();
    for (const d of drivers) inventories.set(d.name, await d.inventory());
    const inventory = mergeInventories(inventories);
    const rec = await reconcile({
      journal, drivers, selfRunId: runId, inventories,
      resolveQuiescer: (vm) => engine.quiescer(vm),
      resolveSnapshotProvider: (v) => engine.snapshotProvider(v),
    });
    result.reconciled = [...rec.actions, ...rec.problems, ...rec.skipped];

    const ctx: JobContext = { runId, job: job.name, policy: job.consistency, mode: job.mode, startedAt: result.startedAt, inventory, signal };
    await hooks.jobStart.promise(ctx);
    const vms = await hooks.vmsSelected.promise(selectVms(inventory.vms, job.vms), ctx);
    if (vms.length === 0) throw new StillpointError(`job "${job.name}" selects no VM`, { hint: `the inventory has ${inventory.vms.length} VM(s): ${inventory.vms.map((v) => v.name).join(', ') || 'none'}; check the job's "vms"` });

    // ---- 1. prerequisites and 2. decision, per VM ---------------------------------------------
    const tasks: VmTask[] = [];
    for (const vm of vms) {
      const driver = driverByName.get(vm.driver);
      if (!driver) throw new StillpointError(`VM ${vm.name} names driver "${vm.driver}", which is not configured`, { hint: 'a driver must report its own instance name in VmFacts.driver' });
      const { report, decision } = await assessVm(engine, driver, vm, ctx);
      tasks.push(new VmTask({ job: ctx, vm, driver, report, decision }));
    }

    // ---- the transport groups (one per VM on-host; one per volume off-host) -------------------
    const groups = planGroups(tasks.filter((t) => isBackedUp(t)), engine, ctx, job, limiters.limits.vmsPerSnapshot ?? DEFAULT_LIMITS.vmsPerSnapshot!);
    const unplanned = tasks.filter((t) => !isBackedUp(t));
    await Promise.all([
      ...groups.map((g) => runGroup(g)),
      ...unplanned.map((t) => finishVm(t)),
    ]);
    result.vms = tasks.map(toResult);
    const ok = result.vms.filter((v) => v.outcome === 'success').length;
    result.status = ok === result.vms.length ? 'success' : ok > 0 ? 'partial' : 'failed';
  } catch (e) {
    result.error = message(e);
    result.status = 'failed';
  } finally {
    result.durationMs = Date.now() - startedAt.getTime();
    await journal.endRun(runId);
  }
  await hooks.jobDone.promise(result);
  return result;

  // ---- one group: quiesce -> checkpoint -> thaw, [snapshot], present -> read -> store -> merge --
  async function runGroup(group: { run: GroupRun; transport: Transport; tasks: VmTask[] }): Promise<void> {
    const { tasks: groupTasks, transport } = group;
    try {
      await Promise.all(groupTasks.map((t) => guarded(t, () => prepareVm(t))));
      await withGroupSession(group.run, transport, groupTasks, async (session) => {
        await Promise.all(groupTasks.map((t) => transferThenMerge(t, session, transport)));
      });
    } catch (e) {
      for (const t of groupTasks) if (!t.failed && !t.restorePoint) t.fail(e);
    } finally {
      // merge always: also when the group's snapshot or session failed before a VM got its turn
      await Promise.all(groupTasks.map((t) => mergeVm(t)));
      await Promise.all(groupTasks.map((t) => finishVm(t)));
    }
  }

  /** Quiesce -> checkpoint -> thaw for one VM (nothing for a VM that is off). */
  async function prepareVm(task: VmTask): Promise<void> {
    const { run } = task;
    if (task.failed || run.decision.method === 'offline') return;
    await limiters.host.run(run.vm.host, async () => {
      if (signal.aborted) throw new StillpointError('the job was cancelled before this VM was checkpointed');
      await hooks.beforeQuiesce.promise(run);
      let outcome: QuiesceOutcome;
      if (run.decision.quiesce === 'engine') {
        outcome = await checkpointWhileFrozen(task);
      } else {
        const cp = await createCheckpoint(task, run.decision.checkpoint ?? 'standard');
        outcome = { consistency: cp.consistency, details: [{ target: `checkpoint ${cp.name}`, consistency: cp.consistency, reason: cp.consistencyReason }] };
      }
      run.quiesce = outcome;
      await hooks.afterThaw.promise(run, outcome);
      if (run.decision.method === 'online' && outcome.consistency === 'crash') {
        const why = outcome.details.map((d) => d.reason).filter(Boolean).join('; ') || 'the guest was not quiesced';
        if (job.consistency === 'require') throw new StillpointError(`asked for an application-consistent checkpoint but got a crash-consistent one (${why}); policy "require" forbids keeping it`);
        run.decision = { ...run.decision, method: 'crash-consistent', level: 'crash', reason: `fell back to crash-consistent (policy "prefer"): ${why}` };
      }
    });
  }

  /** Engine quiescing: freeze (journaled) -> standard checkpoint -> thaw, the thaw on every path. */
  async function checkpointWhileFrozen(task: VmTask): Promise<QuiesceOutcome> {
    const { run } = task;
    const quiescer = engine.quiescer(run.vm);
    if (!quiescer) throw new StillpointError('no quiescer serves this VM any more', { where: `VM ${run.vm.name}` });
    const entry = await journal.record(runId, { kind: 'freeze', vm: task.journalVm, quiescer: quiescer.name, deadline: new Date(Date.now() + freezeTimeoutMs).toISOString() });
    let frozen: FrozenGuest;
    try {
      frozen = await quiescer.freeze(run.vm, { deadlineMs: freezeTimeoutMs });
    } catch (e) {
      await quiescer.thawOrphaned?.(run.vm).catch((e2: unknown) => task.warnings.push(`thaw after a failed freeze: ${message(e2)}`));
      await journal.clear(entry);
      if (job.consistency === 'require') throw new StillpointError(`freezing the guest failed and policy "require" forbids falling back: ${message(e)}`, { where: `VM ${run.vm.name}` });
      run.decision = { ...run.decision, method: 'crash-consistent', quiesce: 'none', level: 'crash', reason: `fell back to crash-consistent (policy "prefer"): quiescer ${quiescer.name} could not freeze the guest: ${message(e)}` };
      await createCheckpoint(task, 'standard');
      return { consistency: 'crash', details: [{ target: quiescer.name, consistency: 'crash', reason: message(e) }] };
    }
    let outcome: QuiesceOutcome = { consistency: 'crash', details: [{ target: quiescer.name, consistency: 'crash', reason: 'thaw not confirmed' }] };
    try {
      await createCheckpoint(task, 'standard');
    } finally {
      try {
        outcome = await withTimeout(frozen.thaw(), thawTimeoutMs, `thaw of VM ${run.vm.name} by quiescer ${quiescer.name}`);
        await journal.clear(entry);
      } catch (e) {
        // keep the journal entry: the next reconcile (or the freeze's own deadline) thaws the guest
        task.warnings.push(`${message(e)}; the journal keeps the freeze for "stillpoint cleanup"`);
      }
    }
    return outcome;
  }

  /** Create the checkpoint, its intent journaled first. */
  async function createCheckpoint(task: VmTask, kind: 'production' | 'standard'): Promise<Checkpoint> {
    const { run } = task;
    const name = checkpointName(runId);
    task.checkpointEntry = await journal.record(runId, { kind: 'checkpoint', vm: task.journalVm, checkpointName: name });
    let cp: Checkpoint;
    try {
      cp = await run.driver.createCheckpoint(run.vm, { name, kind, productionOnly: kind === 'production' && job.consistency === 'require', jobId: runId });
    } catch (e) {
      // the driver may have created it halfway: find it and merge it, or forget the intent
      try {
        const left = (await run.driver.listCheckpoints()).find((c) => c.vmId === run.vm.id && c.name === name);
        if (left) await run.driver.mergeCheckpoint(run.vm, left);
        await journal.clear(task.checkpointEntry);
        task.checkpointEntry = undefined;
      } catch (e2) {
        task.warnings.push(`could not undo the failed checkpoint ${name}: ${message(e2)}; "stillpoint cleanup" retries`);
      }
      throw new StillpointError(`checkpoint failed: ${message(e)}`, { where: `VM ${run.vm.name}` });
    }
    run.checkpoint = cp;
    task.checkpointEntry = await journal.update(task.checkpointEntry, { kind: 'checkpoint', vm: task.journalVm, checkpointName: name, checkpointId: cp.id });
    await hooks.checkpointCreated.promise(run, cp);
    return cp;
  }

  /** Off-host: one volume snapshot for the group around the transport session; on-host: just the session. */
  async function withGroupSession(group: GroupRun, transport: Transport, groupTasks: VmTask[], fn: (s: TransportSession) => Promise<void>): Promise<void> {
    if (groupTasks.every((t) => t.failed)) return;
    const openAndRun = async () => {
      const session = await transport.openGroup(group);
      try {
        await fn(session);
      } finally {
        await session.close().catch((e: unknown) => groupTasks.forEach((t) => t.warnings.push(`transport ${transport.name} could not close the group: ${message(e)}`)));
      }
    };
    if (transport.grouping === 'vm') return openAndRun();

    const volume = group.volume!;
    const provider = engine.snapshotProvider(volume);
    if (!provider) throw new StillpointError(`no volume-snapshot provider serves volume ${volume.name}`, { hint: 'add a snapshot plugin (e.g. "btrfs") or use mode "onHost"' });
    await limiters.volume.run(volume.name, async () => {
      const entry = await journal.record(runId, { kind: 'volumeSnapshot', provider: provider.name, volume });
      let snapshot;
      try {
        snapshot = await provider.create(volume, { jobId: runId });
      } catch (e) {
        for (const s of await provider.list(volume).catch(() => [])) if (s.jobId === runId) await provider.delete(s).catch(() => {});
        await journal.clear(entry);
        throw new StillpointError(`volume snapshot of ${volume.name} failed: ${message(e)}`, { where: `provider ${provider.name}` });
      }
      await journal.update(entry, { kind: 'volumeSnapshot', provider: provider.name, volume, snapshotId: snapshot.id });
      group.snapshot = snapshot;
      try {
        await hooks.volumeSnapshotCreated.promise(snapshot, group);
        await openAndRun();
      } finally {
        // every VM of the group is done or failed: delete the snapshot
        let error: string | null = null;
        try {
          await provider.delete(snapshot);
          await journal.clear(entry);
        } catch (e) {
          error = message(e);
          groupTasks.forEach((t) => t.warnings.push(`volume snapshot ${snapshot.id} of ${volume.name} could not be deleted: ${error}; "stillpoint cleanup" retries`));
        }
        await hooks.volumeSnapshotDeleted.promise(snapshot, group, error).catch((e: unknown) => debug('volumeSnapshotDeleted tap failed: %s', message(e)));
      }
    });
  }

  /** Present -> read -> store for one VM, then merge (always). */
  async function transferThenMerge(task: VmTask, session: TransportSession, transport: Transport): Promise<void> {
    try {
      if (task.failed) return;
      if (signal.aborted) throw new StillpointError('the job was cancelled before this VM was read');
      const limited = transport.grouping === 'vm'
        ? (fn: () => Promise<void>) => limiters.host.run(task.run.vm.host, fn)
        : transport.limitsProxies
          ? (fn: () => Promise<void>) => fn()
          : (fn: () => Promise<void>) => limiters.proxy.run(transport.proxy ?? 'proxy', fn);
      await limited(() => restorePointWriters.run(() => storeVm(task, session)));
    } catch (e) {
      task.fail(e);
    } finally {
      await mergeVm(task);
    }
  }

  /**
   * Read and store one VM into a new restore point. With change tracking: before the read, the
   * changed ranges of every disk since the previous restore point's reference point; after the read
   * (the checkpoint still exists, the merge comes after), the checkpoint becomes the new reference
   * point, kept in the manifest. Only once the restore point is committed is the previous reference
   * point removed; when the backup fails the new one is removed and the previous one stays.
   */
  async function storeVm(task: VmTask, session: TransportSession): Promise<void> {
    const { run } = task;
    const { method, level, reason } = run.decision;
    if (method !== 'online' && method !== 'crash-consistent' && method !== 'offline') return;
    const writer = await repository.startRestorePoint({
      job: job.name,
      vm: { id: run.vm.id, name: run.vm.name, driver: run.vm.driver, configuration: run.vm.configuration },
      consistency: { method, level, reason },
      time: run.checkpoint?.createdAt ?? new Date().toISOString(),
    });
    let committed = false;
    const tracking = new VmChangeTracking(run.driver, run.vm, (w) => task.warnings.push(w), (m) => debug('VM %s: %s', run.vm.name, m));
    try {
      const disks = disksToRead(run);
      const expected = disks.map((d) => d.diskId);
      const changes = await tracking.plan(writer.previous, disks, (id) => writer.previousDisk?.(id) ?? null);
      const results = await session.transfer(run, sinkFor(task, writer, changes));
      task.disks = results;
      const missing = expected.filter((id) => !results.some((r) => r.diskId === id));
      if (missing.length > 0) throw new StillpointError(`the transport did not store disk(s) ${missing.join(', ')}`, { where: `VM ${run.vm.name}` });
      await tracking.createPoint(run.checkpoint);
      const kept = tracking.keep(!!run.checkpoint);
      const { id } = await writer.commit(kept ? { referencePoint: kept } : {});
      committed = true;
      task.restorePoint = id;
      task.referencePoint = kept?.id;
      await tracking.committed(!!run.checkpoint);
      await hooks.restorePointCommitted.promise(run, id);
    } catch (e) {
      if (!committed) {
        await writer.abort().catch((e2: unknown) => task.warnings.push(`could not abort the restore point: ${message(e2)}`));
        await tracking.failed();
      }
      throw e;
    }
  }

  function sinkFor(task: VmTask, writer: RestorePointWriter, changes: Map<string, DiskChanges>): TransportSink {
    const { run } = task;
    return {
      presented: async (disks) => { await hooks.disksPresented.promise(run, disks); },
      storeDisk: (disk: PresentedDisk, source: OpenDisk) => limiters.repository.run(repositoryKey, async () => {
        await hooks.diskRead.promise(run, disk);
        const started = Date.now();
        const c = changes.get(disk.diskId) ?? { changed: null, reason: 'the engine planned no changed ranges for this disk' };
        const data = (await source.allocation()).filter((x) => x.kind === 'data');
        const totalBytes = c.changed ? changedDataBytes(c.changed, data) : data.reduce((n, x) => n + x.length, 0);
        let last = 0;
        const r = await writer.storeDisk(
          { id: disk.diskId, virtualSize: source.virtualSize, logicalSectorSize: source.logicalSectorSize },
          source,
          { changed: c.changed, ...(c.changed ? {} : { fullReadReason: c.reason }), onProgress: (p) => {
            const now = Date.now();
            if (now - last < 200) return;
            last = now;
            hooks.diskProgress.call(run, { diskId: disk.diskId, bytesRead: p.bytesRead, bytesStored: p.bytesStored, totalBytes });
          } },
        );
        hooks.diskProgress.call(run, { diskId: disk.diskId, bytesRead: r.bytesRead, bytesStored: r.bytesStored, totalBytes });
        const res: DiskResult = { diskId: disk.diskId, ...r, durationMs: Date.now() - started };
        await hooks.diskStored.promise(run, res);
        return res;
      }),
      remote: options.repositoryAccess && writer.addDisk && writer.previousDisk ? {
        repository: options.repositoryAccess,
        previous: {
          id: writer.previous?.id ?? null,
          disks: Object.fromEntries(disksToRead(run).map((d) => [d.diskId, writer.previousDisk!(d.diskId)]).filter(([, r]) => r != null)),
        },
        changes: Object.fromEntries([...changes].map(([id, c]) => [id, c.changed ? { changed: c.changed } : { changed: null, reason: c.reason }])),
        reading: async (disk) => { await hooks.diskRead.promise(run, disk); },
        progress: (p) => hooks.diskProgress.call(run, p),
        addDisk: async (disk, stored) => {
          await writer.addDisk!(stored.record);
          const r = stored.record as { bytesRead: number; bytesStored: number; bytesUnchanged?: number; fullRead: boolean; reason?: string };
          const res: DiskResult = { diskId: disk.diskId, bytesRead: r.bytesRead, bytesStored: r.bytesStored, bytesUnchanged: r.bytesUnchanged, fullRead: r.fullRead, reason: r.reason, durationMs: stored.durationMs };
          await hooks.diskStored.promise(run, res);
          return res;
        },
      } : undefined,
    };
  }

  /** Merge the checkpoint back (idempotent; runs whatever happened after the checkpoint). */
  async function mergeVm(task: VmTask): Promise<void> {
    const { run } = task;
    const cp = run.checkpoint;
    if (!cp || task.merged) return;
    task.merged = true;
    await limiters.host.run(run.vm.host, async () => {
      await hooks.beforeMerge.promise(run, cp).catch((e: unknown) => task.warnings.push(`beforeMerge: ${message(e)}`));
      let error: string | null = null;
      try {
        await run.driver.mergeCheckpoint(run.vm, cp);
        if (task.checkpointEntry) await journal.clear(task.checkpointEntry);
      } catch (e) {
        error = message(e);
        task.fail(new StillpointError(`merging checkpoint ${cp.name} back failed: ${error}; the journal keeps it, run "stillpoint cleanup"`, { where: `VM ${run.vm.name}` }));
      }
      await hooks.afterMerge.promise(run, cp, error).catch((e: unknown) => task.warnings.push(`afterMerge: ${message(e)}`));
    });
  }

  async function finishVm(task: VmTask): Promise<void> {
    await hooks.vmDone.promise(toResult(task), task.run.job).catch((e: unknown) => task.warnings.push(`vmDone: ${message(e)}`));
  }

  async function guarded(task: VmTask, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      task.fail(e);
    }
  }
}

function isBackedUp(t: VmTask): boolean {
  const m = t.run.decision.method;
  return m === 'online' || m === 'crash-consistent' || m === 'offline';
}

function toResult(task: VmTask): VmResult {
  const { run } = task;
  const { method, level, reason } = run.decision;
  const outcome = method === 'skip' ? 'skipped' : method === 'fail' || task.failed ? 'failed' : 'success';
  return {
    vm: { id: run.vm.id, name: run.vm.name, host: run.vm.host, driver: run.vm.driver },
    method, level: method === 'skip' || method === 'fail' ? null : level, reason, outcome,
    error: method === 'fail' ? (task.error ?? reason) : task.error,
    warnings: [...task.warnings],
    restorePoint: task.restorePoint,
    disks: task.disks,
    ...(task.disks.length > 0 ? { readMode: readMode(task.disks) } : {}),
    ...(task.referencePoint ? { referencePoint: task.referencePoint } : {}),
    bytesRead: task.disks.reduce((n, d) => n + d.bytesRead, 0),
    bytesStored: task.disks.reduce((n, d) => n + d.bytesStored, 0),
    durationMs: Date.now() - task.started,
  };
}

/** Steps 1 and 2 for one VM: the prerequisite report (through the `prerequisites` waterfall) and the decision (through `decision`). Used by `runJob` and `stillpoint check`. */
export async function assessVm(engine: Engine, driver: HypervisorDriver, vm: VmFacts, ctx: JobContext): Promise<{ report: PrerequisiteReport; decision: Decision }> {
  const quiescing = await quiescingFacts(engine, driver, vm);
  const report = engine.hooks.prerequisites.call(evaluatePrerequisites(vm, ctx.inventory, quiescing), vm, ctx);
  const decision = engine.hooks.decision.call(decide(report, ctx.policy, quiescing), report, ctx);
  return { report, decision };
}

async function quiescingFacts(engine: Engine, driver: HypervisorDriver, vm: VmFacts): Promise<QuiescingFacts> {
  const quiescer = engine.quiescer(vm);
  if (!quiescer) return { driverQuiesces: driver.quiescesOnCheckpoint };
  try {
    return { driverQuiesces: driver.quiescesOnCheckpoint, quiescer: { name: quiescer.name, readiness: await quiescer.readiness(vm) } };
  } catch (e) {
    return { driverQuiesces: driver.quiescesOnCheckpoint, quiescer: { name: quiescer.name, readiness: { ready: false, reason: `readiness check failed: ${message(e)}` } } };
  }
}

export function mergeInventories(inventories: Map<string, Inventory>): Inventory {
  const out: Inventory = { hosts: [], clusters: [], vms: [] };
  for (const inv of inventories.values()) {
    for (const h of inv.hosts) if (!out.hosts.some((x) => x.name === h.name)) out.hosts.push(h);
    for (const c of inv.clusters) if (!out.clusters.some((x) => x.name === c.name)) out.clusters.push(c);
    out.vms.push(...inv.vms);
  }
  return out;
}

/** Volumes holding a VM's disks. */
export function volumesOf(vm: VmFacts): string[] {
  return [...new Set(vm.disks.map((d) => d.volume))];
}

/**
 * Pick the transport per VM and group the VMs: one group per VM on-host, one per volume off-host
 * (at most `vmsPerSnapshot` VMs each; a volume with more VMs gets several groups). Mode `auto`
 * reads a VM off-host when a snapshot provider and the off-host transport serve its volume, and
 * says which and why in the decision's reason.
 */
function planGroups(tasks: VmTask[], engine: Engine, ctx: JobContext, job: JobSpec, vmsPerSnapshot: number): Array<{ run: GroupRun; transport: Transport; tasks: VmTask[] }> {
  const onHost = (): Transport => {
    const t = engine.transport({ mode: 'onHost', job: ctx, proxy: job.proxy });
    if (!t) throw new StillpointError('no transport serves mode "onHost"');
    return t;
  };
  const offHost = job.mode === 'onHost' ? undefined : engine.transport({ mode: 'offHost', job: ctx, proxy: job.proxy });
  if (job.mode === 'offHost' && !offHost) {
    throw new StillpointError(`job "${job.name}" has mode "offHost" but no plugin provides the off-host transport`, { hint: 'add the "off-host" plugin to the config, or use mode "onHost" or "auto"' });
  }
  const groups = new Map<string, { run: GroupRun; transport: Transport; tasks: VmTask[] }>();
  for (const task of tasks) {
    const volumes = volumesOf(task.run.vm);
    let transport: Transport = onHost();
    let volume: VolumeRef | undefined;
    if (offHost && offHost.grouping === 'volume') {
      const ref: VolumeRef | undefined = volumes.length === 1 ? { name: volumes[0], path: volumes[0] } : undefined;
      const provider = ref && engine.snapshotProvider(ref);
      const why = !ref
        ? `the VM's disks are on ${volumes.length} volumes (${volumes.join(', ')}); off-host backup needs them on one volume`
        : !provider ? `no volume-snapshot provider serves volume ${ref.name}` : offHost.whyNot?.(ref);
      if (!why) {
        transport = offHost;
        volume = ref;
        if (job.mode === 'auto') amendReason(task, `read off-host: ${provider!.name} snapshots volume ${ref!.name} and transport ${offHost.name} serves it`);
      } else if (job.mode === 'offHost') {
        task.fail(new StillpointError(why, { where: `VM ${task.run.vm.name}`, hint: 'use mode "auto" or "onHost" for this VM' }));
      } else {
        amendReason(task, `read on-host: ${why}`);
      }
    } else if (offHost) {
      transport = offHost;
    }
    let key = transport.grouping === 'volume' && volume ? `volume:${volume.name}` : `vm:${task.run.vm.id}`;
    if (transport.grouping === 'volume' && volume) {
      // a volume with more VMs than one snapshot may hold gets further groups: volume:<name>#2, ...
      for (let n = 2; (groups.get(key)?.tasks.length ?? 0) >= vmsPerSnapshot; n++) key = `volume:${volume.name}#${n}`;
    }
    const existing = groups.get(key);
    task.run.group = key;
    if (existing) {
      existing.tasks.push(task);
      existing.run.vms.push(task.run);
    } else {
      groups.set(key, { run: { job: ctx, key, volume, vms: [task.run] }, transport, tasks: [task] });
    }
  }
  return [...groups.values()];
}

/** Add which transport reads the VM, and why, to the decision's reason (mode `auto`). */
function amendReason(task: VmTask, why: string): void {
  task.run.decision = { ...task.run.decision, reason: `${task.run.decision.reason}; ${why}` };
}

/** Resolve with `promise`, or reject after `ms` (the work goes on; its result is ignored). */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StillpointError(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
