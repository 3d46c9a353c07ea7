/**
 * Stillpoint's public API: the engine and its hooks, the plugin contracts, the pipeline, config
 * loading, the journal, the repository and the errors. Plugin authors need `definePlugin`, the
 * contract types and the hook argument types; test kits are in `stillpoint/testing`.
 */
export type * from './contracts/index.ts';
export { definePlugin, type PluginContext, type PluginFactory, type StillpointPlugin } from './plugin.ts';
export { StillpointError, NotFoundError, TransientError, ConfigError, CorruptImageError } from './errors.ts';

export { Engine, CORE_PLUGIN, type AppliedPlugin } from './engine/engine.ts';
export { createHooks, type EngineHooks, type DriverSpec, type StorageSpec } from './engine/hooks.ts';
export {
  runJob, assessVm, selectVms, mergeInventories, newRunId,
  type JobSpec, type RunJobOptions, type VmSelector,
} from './engine/pipeline.ts';
export { evaluatePrerequisites, decide, MIN_HOST_BUILD, MIN_CONFIGURATION_VERSION, MIN_CLUSTER_FUNCTIONAL_LEVEL, type QuiescingFacts } from './engine/prerequisites.ts';
export { OnHostTransport, disksToRead, type Transport, type TransportRequest, type TransportSession, type TransportSink } from './engine/transport.ts';
export { Semaphore, KeyedSemaphore, Limiters, DEFAULT_LIMITS, type Limits } from './engine/semaphore.ts';
export type { BackupRepository, RestorePointWriter as RestorePointWriterPort, RestorePointMeta as RestorePointMetaPort } from './engine/repository-port.ts';
export type * from './engine/types.ts';

export { loadConfig, parseConfig, SEARCH_PLACES, type LoadedConfig } from './config/load.ts';
export { configSchema, type StillpointConfig, type JobConfig, type DriverConfig, type PluginEntry } from './config/schema.ts';
export { formatIssues, formatPath } from './config/problems.ts';

export { Journal, type JournalEntry, type Intent, type RunRecord } from './journal/journal.ts';
export { reconcile, checkpointName, CHECKPOINT_PREFIX, type ReconcileReport } from './journal/reconcile.ts';

export { loadPlugins, pluginRequests } from './plugins/loader.ts';
export { BUILTIN_PLUGINS, DEFAULT_PLUGINS } from './plugins/builtins.ts';
export { Session } from './session.ts';

export { openRepository, Repository, repositoryConfigSchema, retentionSchema, type RepositoryConfig, type Retention } from './repository/index.ts';
