import createDebug from 'debug';
import { StillpointError } from '../errors.ts';
import { runBounded } from './data.ts';
import { keys, tableEntry, type Manifest } from './format.ts';
import type { Repository } from './repository.ts';
import { applyRetention, type Retention } from './retention.ts';

const debug = createDebug('stillpoint:repository');

export interface PruneResult {
  kept: Array<{ id: string; vm: string; job: string; reasons: string[] }>;
  removed: Array<{ id: string; vm: string; job: string; time: string }>;
}

/** Remove the restore points a retention does not keep (their manifests; chunks go with `gc`). */
export async function prune(repo: Repository, retention: Retention, options: { job?: string; vm?: string; dryRun?: boolean } = {}): Promise<PruneResult> {
  const decision = applyRetention(await repo.manifests({ job: options.job, vm: options.vm }), retention);
  if (!options.dryRun) {
    for (const m of decision.remove) await repo.storage.delete(keys.restorePoint(m.id));
  }
  return {
    kept: decision.keep.map(({ manifest: m, reasons }) => ({ id: m.id, vm: m.vm.name, job: m.job, reasons })),
    removed: decision.remove.map((m) => ({ id: m.id, vm: m.vm.name, job: m.job, time: m.time })),
  };
}

export interface GcOptions {
  /** How long to wait for a running backup's writer lock before deferring the sweep (default 0). */
  lockWaitMs?: number;
  dryRun?: boolean;
}

export interface GcResult {
  /** Unreferenced chunks and tables found in the mark phase. */
  candidates: number;
  deletedChunks: number;
  deletedTables: number;
  /** True when a backup held the writer lock, so nothing was deleted. */
  deferred: boolean;
  reason?: string;
}

/**
 * Garbage collection, mark and sweep. Mark (no lock): every chunk and table referenced by a
 * committed manifest is live; the rest are candidates. Sweep (under the writer lock, so no backup
 * runs meanwhile): manifests committed since the mark add their references, then the remaining
 * candidates are deleted. A backup that reused an unreferenced chunk by `head` holds the writer
 * lock until its manifest is committed (the lock of its process, shared by every restore point
 * the process has open), so the sweep either waits for it or sees its references.
 */
export async function garbageCollect(repo: Repository, options: GcOptions = {}): Promise<GcResult> {
  const live = { chunks: new Set<string>(), tables: new Set<string>() };
  const seen = new Set<string>();
  const addManifest = async (m: Manifest) => {
    for (const disk of m.disks) {
      if (live.tables.has(disk.table)) continue;
      live.tables.add(disk.table);
      let table: Buffer;
      try {
        table = await repo.data.loadTable(disk);
      } catch (cause) {
        throw new StillpointError(`garbage collection stopped: the chunk table of restore point ${m.id}, disk ${disk.id} cannot be read`, {
          hint: 'run `stillpoint verify` and prune or repair the damaged restore point first; nothing was deleted',
          cause,
        });
      }
      for (let i = 0; i < disk.chunkCount; i++) {
        const c = tableEntry(table, i);
        if (c) live.chunks.add(c);
      }
    }
  };
  const markManifests = async () => {
    for (const id of await repo.manifestIds()) {
      if (seen.has(id)) continue;
      seen.add(id);
      await addManifest(await repo.manifest(id));
    }
  };

  // Mark.
  await markManifests();
  const name = (k: string) => k.slice(k.lastIndexOf('/') + 1);
  const chunkKeys = (await repo.storage.list(keys.chunksPrefix)).filter((k) => !live.chunks.has(name(k)));
  const tableKeys = (await repo.storage.list(keys.tablesPrefix)).filter((k) => !live.tables.has(name(k)));
  const candidates = chunkKeys.length + tableKeys.length;
  debug('gc mark: %d live chunks, %d candidates', live.chunks.size, candidates);
  if (options.dryRun || candidates === 0) {
    return { candidates, deletedChunks: 0, deletedTables: 0, deferred: false };
  }

  // Sweep, under the writer lock.
  let release: () => Promise<void>;
  try {
    release = await repo.writerLock.exclusive('garbage collection', options.lockWaitMs ?? 0);
  } catch (error) {
    return { candidates, deletedChunks: 0, deletedTables: 0, deferred: true, reason: (error as Error).message };
  }
  try {
    await markManifests();
    const deadChunks = chunkKeys.filter((k) => !live.chunks.has(name(k)));
    const deadTables = tableKeys.filter((k) => !live.tables.has(name(k)));
    await runBounded(deadChunks, 8, (k) => repo.storage.delete(k));
    await runBounded(deadTables, 8, (k) => repo.storage.delete(k));
    return { candidates, deletedChunks: deadChunks.length, deletedTables: deadTables.length, deferred: false };
  } finally {
    repo.data.forgetRecent();
    await release();
  }
}
