import createDebug from 'debug';
import type { CheckpointRef, HypervisorDriver } from '../contracts/driver.ts';
import type { Quiescer } from '../contracts/quiescer.ts';
import type { VolumeRef, VolumeSnapshot, VolumeSnapshotProvider } from '../contracts/snapshot.ts';
import type { Inventory, VmFacts } from '../contracts/vm.ts';
import type { Journal, JournalEntry, RunRecord } from './journal.ts';

const debug = createDebug('stillpoint:journal');

/** Prefix of every checkpoint Stillpoint creates: `stillpoint-<runId>`. */
export const CHECKPOINT_PREFIX = 'stillpoint-';
export const checkpointName = (runId: string) => `${CHECKPOINT_PREFIX}${runId}`;

export interface ReconcileDeps {
  journal: Journal;
  drivers: HypervisorDriver[];
  resolveQuiescer(vm: VmFacts): Quiescer | undefined;
  resolveSnapshotProvider(volume: VolumeRef): VolumeSnapshotProvider | undefined;
  /** The calling run, if any: its own (fresh) entries are not touched. */
  selfRunId?: string;
  /** Volumes to ask snapshot providers about besides those in the journal (e.g. every volume of the inventory). */
  volumes?: VolumeRef[];
  /** Inventories already fetched (runJob passes them to avoid asking twice). */
  inventories?: Map<string, Inventory>;
}

export interface ReconcileReport {
  /** What was undone, one sentence each. */
  actions: string[];
  /** What could not be undone (kept in the journal for the next reconcile), one sentence each. */
  problems: string[];
  /** What was left alone because a live run owns it. */
  skipped: string[];
}

const vmLabel = (vm: { name: string; id: string }) => `VM ${vm.name} (${vm.id})`;

/**
 * Reconcile the journal with what the drivers and snapshot providers report, and undo what a crashed
 * run left behind: thaw frozen guests, merge orphaned Stillpoint checkpoints, delete orphaned volume
 * snapshots. Runs at the start of every job and in `stillpoint cleanup`. Never throws for one
 * thing it cannot undo: it reports it in `problems` and keeps the entry for the next time.
 */
export async function reconcile(deps: ReconcileDeps): Promise<ReconcileReport> {
  const report: ReconcileReport = { actions: [], problems: [], skipped: [] };
  const { journal } = deps;
  const live = (await journal.liveRuns()).filter((r) => r.runId !== deps.selfRunId);
  const isLive = (runId: string) => runId === deps.selfRunId || live.some((r) => r.runId === runId);
  const liveOf = (runId: string): RunRecord | undefined => live.find((r) => r.runId === runId);
  const runOfName = (name: string): string | undefined => {
    if (!name.startsWith(CHECKPOINT_PREFIX)) return undefined;
    const rest = name.slice(CHECKPOINT_PREFIX.length);
    if (deps.selfRunId && rest.startsWith(deps.selfRunId)) return deps.selfRunId;
    return live.find((r) => rest.startsWith(r.runId))?.runId ?? rest;
  };

  const entries = await journal.entries();
  const mine = entries.filter((e) => !isLive(e.runId));
  for (const e of entries) {
    if (isLive(e.runId) && e.runId !== deps.selfRunId) {
      const r = liveOf(e.runId)!;
      report.skipped.push(`left ${describeIntent(e)} alone: run ${e.runId} (pid ${r.pid} on ${r.host}) is still running`);
    }
  }

  const inventories = deps.inventories ?? new Map<string, Inventory>();
  const driverByName = new Map(deps.drivers.map((d) => [d.name, d]));
  async function inventoryOf(driver: HypervisorDriver): Promise<Inventory> {
    let inv = inventories.get(driver.name);
    if (!inv) {
      inv = await driver.inventory();
      inventories.set(driver.name, inv);
    }
    return inv;
  }
  async function findVm(driverName: string, vmId: string): Promise<VmFacts | undefined> {
    const driver = driverByName.get(driverName);
    if (!driver) return undefined;
    return (await inventoryOf(driver)).vms.find((v) => v.id === vmId);
  }

  // 1. Thaw guests a crashed run left frozen.
  for (const e of mine) {
    if (e.intent.kind !== 'freeze') continue;
    const intent = e.intent;
    try {
      const vm = await findVm(intent.vm.driver, intent.vm.id);
      if (!vm) {
        report.problems.push(`cannot thaw ${vmLabel(intent.vm)} (frozen by run ${e.runId}): driver "${intent.vm.driver}" does not report it; check the guest by hand, then delete ${journal.dir}/${e.id}.json`);
        continue;
      }
      const quiescer = deps.resolveQuiescer(vm);
      if (quiescer?.thawOrphaned) {
        const thawed = await quiescer.thawOrphaned(vm);
        report.actions.push(thawed
          ? `thawed ${vmLabel(vm)}, left frozen by run ${e.runId} (quiescer ${quiescer.name})`
          : `${vmLabel(vm)} was no longer frozen (run ${e.runId}); forgot the freeze`);
      } else {
        const expired = Date.parse(intent.deadline) <= Date.now();
        if (!expired) {
          report.problems.push(`${vmLabel(vm)} may still be frozen by run ${e.runId} until ${intent.deadline} (quiescer "${intent.quiescer}" cannot thaw an orphaned freeze); run cleanup again after the deadline`);
          continue;
        }
        report.actions.push(`freeze of ${vmLabel(vm)} by run ${e.runId} ended by its deadline (${intent.deadline})`);
      }
      await journal.clear(e);
    } catch (err) {
      report.problems.push(`could not thaw ${vmLabel(intent.vm)} (frozen by run ${e.runId}): ${(err as Error).message}`);
    }
  }

  // 2. Merge orphaned checkpoints: every Stillpoint checkpoint a driver lists whose run is not live.
  const listed = new Map<string, CheckpointRef[]>();
  for (const driver of deps.drivers) {
    try {
      listed.set(driver.name, await driver.listCheckpoints());
    } catch (err) {
      report.problems.push(`could not list the checkpoints of driver "${driver.name}": ${(err as Error).message}`);
    }
  }
  const merged = new Set<string>();
  for (const [driverName, refs] of listed) {
    for (const ref of refs) {
      const runId = runOfName(ref.name);
      if (runId === undefined) continue; // not Stillpoint's
      if (isLive(runId)) {
        if (runId !== deps.selfRunId) report.skipped.push(`left checkpoint ${ref.name} of ${vmLabel({ name: ref.vmName, id: ref.vmId })} alone: run ${runId} is still running`);
        continue;
      }
      try {
        const vm = await findVm(driverName, ref.vmId);
        if (!vm) {
          report.problems.push(`checkpoint ${ref.name} belongs to ${vmLabel({ name: ref.vmName, id: ref.vmId })}, which driver "${driverName}" no longer reports; merge it by hand`);
          continue;
        }
        await driverByName.get(driverName)!.mergeCheckpoint(vm, ref);
        merged.add(`${driverName}/${ref.vmId}/${ref.name}`);
        report.actions.push(`merged orphaned checkpoint ${ref.name} of ${vmLabel(vm)} back (left by run ${runId})`);
      } catch (err) {
        report.problems.push(`could not merge checkpoint ${ref.name} of ${vmLabel({ name: ref.vmName, id: ref.vmId })}: ${(err as Error).message}`);
      }
    }
  }
  for (const e of mine) {
    if (e.intent.kind !== 'checkpoint') continue;
    const { vm, checkpointName: name } = e.intent;
    const refs = listed.get(vm.driver);
    if (!refs) {
      if (!driverByName.has(vm.driver)) report.problems.push(`journal names driver "${vm.driver}" (checkpoint ${name} of ${vmLabel(vm)}), which the config no longer has; merge it by hand, then delete ${journal.dir}/${e.id}.json`);
      continue;
    }
    const stillThere = refs.some((r) => r.vmId === vm.id && r.name === name && !merged.has(`${vm.driver}/${vm.id}/${r.name}`));
    if (stillThere) continue; // merge failed above: keep the intent
    if (!refs.some((r) => r.vmId === vm.id && r.name === name)) {
      report.actions.push(`checkpoint ${name} of ${vmLabel(vm)} (run ${e.runId}) was never created or is already merged; forgot it`);
    }
    await journal.clear(e);
  }

  // 3. Delete orphaned volume snapshots.
  const providers = new Map<string, { provider: VolumeSnapshotProvider; volumes: VolumeRef[] }>();
  const addProvider = (volume: VolumeRef) => {
    const p = deps.resolveSnapshotProvider(volume);
    if (!p) return;
    const known = providers.get(p.name) ?? { provider: p, volumes: [] };
    if (!known.volumes.some((v) => v.name === volume.name)) known.volumes.push(volume);
    providers.set(p.name, known);
  };
  for (const e of mine) if (e.intent.kind === 'volumeSnapshot') addProvider(e.intent.volume);
  for (const v of deps.volumes ?? []) addProvider(v);
  const listedSnapshots = new Map<string, VolumeSnapshot[]>();
  for (const { provider } of providers.values()) {
    try {
      listedSnapshots.set(provider.name, await provider.list());
    } catch (err) {
      report.problems.push(`could not list the volume snapshots of provider "${provider.name}": ${(err as Error).message}`);
    }
  }
  const deleted = new Set<string>();
  for (const [providerName, snaps] of listedSnapshots) {
    const provider = providers.get(providerName)!.provider;
    for (const snap of snaps) {
      if (isLive(snap.jobId)) continue;
      try {
        await provider.delete(snap);
        deleted.add(`${providerName}/${snap.id}`);
        report.actions.push(`deleted orphaned volume snapshot ${snap.id} of volume ${snap.volume.name} (left by run ${snap.jobId})`);
      } catch (err) {
        report.problems.push(`could not delete volume snapshot ${snap.id} of volume ${snap.volume.name}: ${(err as Error).message}`);
      }
    }
  }
  for (const e of mine) {
    if (e.intent.kind !== 'volumeSnapshot') continue;
    const { provider: providerName, volume, snapshotId } = e.intent;
    const snaps = listedSnapshots.get(providerName);
    if (!snaps) {
      if (!providers.has(providerName)) report.problems.push(`journal names volume-snapshot provider "${providerName}" for volume ${volume.name}, which no loaded plugin provides; delete the snapshot by hand, then ${journal.dir}/${e.id}.json`);
      continue;
    }
    const remaining = snaps.filter((s) => s.jobId === e.runId && (!snapshotId || s.id === snapshotId) && !deleted.has(`${providerName}/${s.id}`));
    if (remaining.length > 0) continue;
    if (!snaps.some((s) => s.jobId === e.runId)) report.actions.push(`volume snapshot of ${volume.name} (run ${e.runId}) was never created or is already deleted; forgot it`);
    await journal.clear(e);
  }

  debug('reconcile: %o', report);
  return report;
}

export function describeIntent(e: JournalEntry): string {
  const i = e.intent;
  switch (i.kind) {
    case 'freeze': return `the freeze of ${vmLabel(i.vm)}`;
    case 'checkpoint': return `checkpoint ${i.checkpointName} of ${vmLabel(i.vm)}`;
    case 'volumeSnapshot': return `the volume snapshot of ${i.volume.name}`;
  }
}
