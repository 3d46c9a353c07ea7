import { AsyncSeriesHook, SyncBailHook, SyncHook } from 'tapable';
import type { HypervisorDriver } from '../contracts/driver.ts';
import type { Quiescer } from '../contracts/quiescer.ts';
import type { DiskReader } from '../contracts/reader.ts';
import type { StorageTarget } from '../contracts/storage.ts';
import type { VolumeRef, VolumeSnapshotProvider } from '../contracts/snapshot.ts';
import type { VmFacts } from '../contracts/vm.ts';

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
 * Pipeline hooks are added by the engine below the providers; each documents when it runs.
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
