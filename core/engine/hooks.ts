import { AsyncSeriesHook, AsyncSeriesWaterfallHook, SyncBailHook, SyncHook, SyncWaterfallHook } from 'tapable';
import type { Checkpoint, CheckpointRef, HypervisorDriver } from '../contracts/driver.ts';
import type { QuiesceOutcome, Quiescer } from '../contracts/quiescer.ts';
import type { DiskReader } from '../contracts/reader.ts';
import type { StorageTarget } from '../contracts/storage.ts';
import type { VolumeRef, VolumeSnapshot, VolumeSnapshotProvider } from '../contracts/snapshot.ts';
import type { VmFacts } from '../contracts/vm.ts';
import type { Transport, TransportRequest } from './transport.ts';
import type {
  Decision, DiskProgress, DiskResult, GroupRun, JobContext, JobResult, PresentedDisk, PrerequisiteReport, VmResult, VmRun,
} from './types.ts';

/** A `drivers[]` entry of the config: which plugin serves it and with what settings. */
export interface DriverSpec {
  name: string;
  type: string;
  options: Record<string, unknown>;
}

/** A `repository.storage` entry of the config. */
export interface StorageSpec {
  type: string;
  options: Record<string, unknown>;
}

/**
 * Every hook of the engine, declared in one place with its argument names.
 *
 * Provider hooks (SyncBailHook): the first plugin that returns a value serves the request;
 * a plugin that does not serve it returns `undefined`.
 *
 * Pipeline hooks run in the order of `runJob` (core/engine/pipeline.ts), which is the order of
 * DESIGN.md: prerequisites -> decision -> quiesce -> checkpoint -> thaw -> present -> read -> store -> merge.
 * Kinds (Rollup-style): `series` hooks run every tap in turn and await each (AsyncSeriesHook); a tap that
 * throws fails the step it belongs to (the VM, or the job for job-level hooks) and the engine's cleanup
 * still runs. `waterfall` hooks pass a value through every tap; each returns the (possibly amended) value.
 * `sync` hooks are notifications; they must not throw and must not block. Full contract: docs/hooks.md.
 */
export function createHooks() {
  return {
    // ---- providers ---------------------------------------------------------------
    /** resolveDriver(spec) -> HypervisorDriver | undefined. Called once per `drivers[]` entry. */
    resolveDriver: new SyncBailHook<[DriverSpec], HypervisorDriver | undefined>(['spec']),
    /** resolveQuiescer(vm) -> Quiescer | undefined. Called per VM to quiesce (or check readiness). */
    resolveQuiescer: new SyncBailHook<[VmFacts], Quiescer | undefined>(['vm']),
    /** resolveReader(path) -> DiskReader | undefined. Called per disk chain to read. */
    resolveReader: new SyncBailHook<[string], DiskReader | undefined>(['path']),
    /** resolveStorage(spec) -> StorageTarget | undefined. Called once per repository. */
    resolveStorage: new SyncBailHook<[StorageSpec], StorageTarget | undefined>(['spec']),
    /** resolveSnapshotProvider(volume) -> VolumeSnapshotProvider | undefined. Called per off-host group. */
    resolveSnapshotProvider: new SyncBailHook<[VolumeRef], VolumeSnapshotProvider | undefined>(['volume']),

    /**
     * resolveTransport(request) -> Transport | undefined. Called once per job with the job's mode
     * (`onHost` or `offHost`; for `auto` first `offHost`, then `onHost`). The engine taps it last
     * (stage 100) with the built-in on-host transport; an off-host transport plugin taps `offHost`.
     */
    resolveTransport: new SyncBailHook<[TransportRequest], Transport | undefined>(['request']),

    // ---- pipeline: job -------------------------------------------------------------
    /** series(job). After the journal's reconcile and the inventory, before any VM is touched. Throwing fails the job. */
    jobStart: new AsyncSeriesHook<[JobContext]>(['job']),
    /** waterfall(vms, job) -> vms. The VMs the job selected from the inventory; taps may filter or reorder. */
    vmsSelected: new AsyncSeriesWaterfallHook<[VmFacts[], JobContext]>(['vms', 'job']),
    /** series(result). Once per job after every VM and group finished (also when the job failed). */
    jobDone: new AsyncSeriesHook<[JobResult]>(['result']),

    // ---- pipeline: per VM (in this order) --------------------------------------------
    /** waterfall(report, vm, job) -> report. Step 1: the prerequisite conditions the core evaluated; taps may add or amend conditions. */
    prerequisites: new SyncWaterfallHook<[PrerequisiteReport, VmFacts, JobContext]>(['report', 'vm', 'job']),
    /** waterfall(decision, report, job) -> decision. The method the engine chose and why; taps may change it (the reason must say so). */
    decision: new SyncWaterfallHook<[Decision, PrerequisiteReport, JobContext]>(['decision', 'report', 'job']),
    /** series(vm). Right before the guest is frozen (engine quiescing) or the production checkpoint is requested. Not called for offline/skip/fail. */
    beforeQuiesce: new AsyncSeriesHook<[VmRun]>(['vm']),
    /** series(vm, checkpoint). The checkpoint exists (its intent is journaled); the guest may still be frozen (engine quiescing). Throwing fails the VM; thaw and merge still run. */
    checkpointCreated: new AsyncSeriesHook<[VmRun, Checkpoint]>(['vm', 'checkpoint']),
    /** series(vm, outcome). The guest has been thawed (engine quiescing) or the driver's production checkpoint finished; `outcome` says what was achieved. */
    afterThaw: new AsyncSeriesHook<[VmRun, QuiesceOutcome]>(['vm', 'outcome']),
    /** series(vm, disks). The transport has made the VM's frozen disks readable (on the host or on a proxy). */
    disksPresented: new AsyncSeriesHook<[VmRun, PresentedDisk[]]>(['vm', 'disks']),
    /** series(vm, disk). A disk's chain is open and reading starts. */
    diskRead: new AsyncSeriesHook<[VmRun, PresentedDisk]>(['vm', 'disk']),
    /** sync(vm, progress). While a disk is read and stored; at most a few times a second. */
    diskProgress: new SyncHook<[VmRun, DiskProgress]>(['vm', 'progress']),
    /** series(vm, result). A disk has been stored into the restore point (not yet committed); `result.fullRead`/`reason` say whether only changed ranges were read, or why all was. */
    diskStored: new AsyncSeriesHook<[VmRun, DiskResult]>(['vm', 'result']),
    /** series(vm, restorePointId). The restore point is committed (with the reference point made from its checkpoint; the previous one is removed). See docs/hooks.md "Change tracking". */
    restorePointCommitted: new AsyncSeriesHook<[VmRun, string]>(['vm', 'restorePointId']),
    /** series(vm, checkpoint). Before the checkpoint is merged back; runs whether reading/storing succeeded or not. */
    beforeMerge: new AsyncSeriesHook<[VmRun, CheckpointRef]>(['vm', 'checkpoint']),
    /** series(vm, checkpoint, error). After the merge; `error` is the merge's failure message or `null`. */
    afterMerge: new AsyncSeriesHook<[VmRun, CheckpointRef, string | null]>(['vm', 'checkpoint', 'error']),
    /** series(result, job). The VM is finished (success, failed or skipped); its checkpoint is merged and guest thawed. */
    vmDone: new AsyncSeriesHook<[VmResult, JobContext]>(['result', 'job']),

    // ---- pipeline: off-host groups ----------------------------------------------------
    /** series(snapshot, group). The group's volume snapshot exists (journaled); before it is presented to the proxy. */
    volumeSnapshotCreated: new AsyncSeriesHook<[VolumeSnapshot, GroupRun]>(['snapshot', 'group']),
    /** series(snapshot, group, error). Every VM of the group is done or failed and the snapshot was deleted (`error` if deletion failed). */
    volumeSnapshotDeleted: new AsyncSeriesHook<[VolumeSnapshot, GroupRun, string | null]>(['snapshot', 'group', 'error']),

    // ---- lifecycle -----------------------------------------------------------------
    /** Runs once after every plugin's apply(); plugins may start background resources here. */
    ready: new AsyncSeriesHook<[]>([]),
    /** Runs once when the engine shuts down; plugins release resources. */
    shutdown: new AsyncSeriesHook<[]>([]),
    /** Informational: a plugin was applied. */
    pluginApplied: new SyncHook<[string]>(['pluginName']),
  };
}

export type EngineHooks = ReturnType<typeof createHooks>;
