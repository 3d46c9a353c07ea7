import type { StorageTarget } from '../contracts/storage.ts';
import { openRepository, type OpenRepositoryOptions } from './repository.ts';
import type { RepositoryData } from './data.ts';
import type { RepositoryConfig } from './options.ts';

/**
 * Open only the data part of an existing repository (what an off-host proxy needs): the storage
 * target, the repository config and the passphrase. Use `storeDiskData(disk, source, { previous,
 * changed })` and hand the returned `DiskRecord` to the coordinator's `writer.addDisk()`.
 * Takes no lock: the coordinator holds the writer lock for the restore point.
 */
export async function openRepositoryData(storage: StorageTarget, config: RepositoryConfig, opts: Omit<OpenRepositoryOptions, 'create'> = {}): Promise<RepositoryData> {
  const repo = await openRepository(storage, config, { loadIndex: true, ...opts, create: false });
  return repo.data;
}
