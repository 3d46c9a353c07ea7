/**
 * The repository: deduplicated, compressed, optionally encrypted restore points on a storage
 * target. Format: docs/repository-format.md.
 */
export { openRepository, resolvePassphrase, Repository, RestorePointWriter, summarise } from './repository.ts';
export type { OpenRepositoryOptions, StoreDiskResult } from './repository.ts';
export { openRepositoryData } from './open-data.ts';
export { RepositoryData, normaliseRanges } from './data.ts';
export type { DiskIdentity, StoreDiskOptions, StoreProgress } from './data.ts';
export type { DiskRecord, Manifest, RestorePointMeta, RestorePointSummary, StoredConfig } from './format.ts';
export { diskRecordSchema, manifestSchema } from './format.ts';
export { retentionSchema, applyRetention } from './retention.ts';
export type { Retention, RetentionDecision } from './retention.ts';
export type { VerifyOptions, VerifyReport, DamagedRestorePoint, VerifyProblem } from './verify.ts';
export type { GcOptions, GcResult, PruneResult } from './gc.ts';
export { restoredDiskFileName } from './restore.ts';
export type { RestoreDiskOptions, RestoreFormat, RestoreProgress } from './restore.ts';
export { RawFileDisk } from './raw-source.ts';
export { repositoryConfigSchema, type RepositoryConfig } from './options.ts';
export { RetryingStorage, withRetry, storageError, assertValidKey, assertValidPrefix } from './storage-util.ts';
