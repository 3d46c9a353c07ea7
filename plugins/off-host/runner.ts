import { createHash } from 'node:crypto';
import createDebug from 'debug';
import { z } from 'zod';
import type { OpenDisk } from '../../core/contracts/reader.ts';
import type { Engine } from '../../core/engine/engine.ts';
import { ConfigError, StillpointError } from '../../core/errors.ts';
import { diskRecordSchema } from '../../core/repository/format.ts';
import { repositoryConfigSchema } from '../../core/repository/options.ts';
import type { RepositoryData } from '../../core/repository/data.ts';
import { openRepositoryData } from '../../core/repository/open-data.ts';
import type { TaskRunner } from './session.ts';

const debug = createDebug('stillpoint:proxy');

/**
 * What a task's `restorePoint` holds for the repository's data store: per disk, the previous
 * restore point's record (the base of an incremental), and that restore point's id.
 */
export const taskRestorePointSchema = z.object({
  previousId: z.string().nullable().default(null),
  previous: z.record(z.string(), diskRecordSchema).default({}),
});
export type TaskRestorePoint = z.output<typeof taskRestorePointSchema>;

export interface TaskRunnerOptions {
  /** The proxy's environment variable holding the repository passphrase (used when a task carries none). */
  passphraseEnv?: string;
  env?: NodeJS.ProcessEnv;
  /** Directory relative paths in the repository config resolve against on the proxy. */
  configDir?: string;
  /** Chunk workers per opened repository. */
  workers?: number;
  /** Where a repository's pack index goes once it outgrows memory (see `OpenRepositoryOptions.cacheDir`). */
  cacheDir?: string;
}

/**
 * The proxy's real task runner: opens each chain with the disk reader that serves it
 * (`resolveReader`, e.g. the native VHDX library), and stores it into the repository through
 * the storage target that serves the task's repository config (`resolveStorage`), with the
 * repository's data store (`storeDiskData`). Opened repositories are kept for later tasks.
 */
export function createTaskRunner(engine: Engine, options: TaskRunnerOptions = {}): TaskRunner & { close(): Promise<void> } {
  const env = options.env ?? process.env;
  const repositories = new Map<string, Promise<RepositoryData>>();

  const repositoryFor = (config: Record<string, unknown>, passphrase: string | undefined, where: string): Promise<RepositoryData> => {
    const parsed = repositoryConfigSchema.safeParse(config);
    if (!parsed.success) {
      throw new ConfigError(parsed.error.issues.map((i) => `task repository.config.${i.path.join('.')}: ${i.message}`), { where });
    }
    const secret = passphrase ?? (options.passphraseEnv ? env[options.passphraseEnv] : undefined);
    const key = createHash('sha256').update(JSON.stringify(parsed.data)).update('\0').update(secret ?? '').digest('hex');
    let repo = repositories.get(key);
    if (!repo) {
      const storage = engine.storage(parsed.data.storage);
      repo = openRepositoryData(storage, parsed.data, { passphrase: secret, env, configDir: options.configDir, workers: options.workers, cacheDir: options.cacheDir });
      repositories.set(key, repo);
      repo.catch(() => repositories.delete(key));
    }
    return repo;
  };

  const runner: TaskRunner = async (task, report, signal) => {
    const where = `VM ${task.vm.name}`;
    const rp = taskRestorePointSchema.safeParse(task.restorePoint);
    if (!rp.success) {
      throw new StillpointError(`the task's restore point is malformed: ${rp.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, { where });
    }
    const repo = await repositoryFor(task.repository.config, task.repository.passphrase, where);
    for (const disk of task.disks) {
      if (signal.aborted) throw signal.reason;
      const diskWhere = `${where}, disk ${disk.diskId}`;
      const started = Date.now();
      let source: OpenDisk;
      try {
        source = await engine.reader(disk.path).open(disk.path, disk.parentPaths.length ? { parentPaths: disk.parentPaths } : undefined);
      } catch (error) {
        throw new StillpointError(`cannot open the chain on the proxy: ${(error as Error).message}`, {
          where: diskWhere,
          hint: 'check that the proxy sees the presented volume snapshot at this path',
          cause: error,
        });
      }
      try {
        debug('task %s: reading %s (%s)', task.id, disk.diskId, disk.path);
        const record = await repo.storeDiskData(
          { id: disk.diskId, virtualSize: disk.virtualSize, logicalSectorSize: source.logicalSectorSize },
          source,
          {
            previous: rp.data.previous[disk.diskId] ?? null,
            previousId: rp.data.previousId,
            changed: disk.changed,
            fullReadReason: disk.fullReadReason,
            signal,
            onProgress: (p) => report.progress(disk, { ...p, totalBytes: disk.virtualSize }),
          },
        );
        report.disk(disk, { record, bytesRead: record.bytesRead, bytesStored: record.bytesStored, durationMs: Date.now() - started });
      } finally {
        await source.close();
      }
    }
  };

  return Object.assign(runner, {
    async close() {
      const opened = await Promise.allSettled(repositories.values());
      repositories.clear();
      for (const r of opened) {
        if (r.status !== 'fulfilled') continue;
        await r.value.close();
        await r.value.storage.target.close?.();
      }
    },
  });
}
