import createDebug from 'debug';
import { StillpointError } from '../errors.ts';
import { runBounded } from './data.ts';
import { ChunkNameSet } from './chunk-set.ts';
import { keys, type Manifest } from './format.ts';
import { DEFAULT_PACK_SIZE, PackBuilder } from './packs.ts';
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
  /**
   * A pack with some unreferenced chunks is repacked (its live chunks copied into a new pack, then
   * it is deleted) when less than this fraction of its bytes is live (default 0.5).
   */
  repackBelow?: number;
  /**
   * Restore points to count as removed (a dry run of a prune: what its collection would free).
   * Only with `dryRun`.
   */
  assumeRemoved?: ReadonlySet<string>;
}

export interface GcResult {
  /** Unreferenced chunks (packed or loose), tables and orphan packs found in the mark phase. */
  candidates: number;
  /** Unreferenced chunks removed (from deleted or repacked packs, and loose ones of format 1). */
  deletedChunks: number;
  deletedTables: number;
  /** Packs deleted (no live chunk, or an orphan without an index) and packs repacked. */
  deletedPacks: number;
  repackedPacks: number;
  /**
   * Bytes of unreferenced chunks in the packs deleted or repacked (what the storage target gives
   * back, apart from tables, indexes and orphans); with `dryRun`, what would be.
   */
  packBytesFreed: number;
  /** True when a backup held the writer lock, so nothing was deleted. */
  deferred: boolean;
  reason?: string;
}

/** What the sweep does with the packs: delete, rewrite, orphans; the dead chunks and their bytes in those. */
interface PackPlan {
  remove: string[];
  repack: string[];
  orphans: string[];
  deadChunks: number;
  deadBytes: number;
}

/** The result of sweeping `plan` and `loose` unreferenced loose chunks and `tables` tables (or, dry, of planning it). */
function swept(candidates: number, plan: PackPlan, loose: number, tables: number): GcResult {
  return {
    candidates,
    deletedChunks: plan.deadChunks + loose,
    deletedTables: tables,
    deletedPacks: plan.remove.length + plan.orphans.length,
    repackedPacks: plan.repack.length,
    packBytesFreed: plan.deadBytes,
    deferred: false,
  };
}

/**
 * Garbage collection, mark and sweep. Mark (no lock): every chunk and table referenced by a
 * committed manifest is live; the rest are candidates. Sweep (under the writer lock, so no backup
 * runs meanwhile): manifests committed since the mark add their references, the pack index is
 * read again (packs stored since the mark), then: packs with no live chunk are deleted (index
 * first, then the pack), packs mostly dead are repacked (live blobs copied as they are — a blob is
 * bound to its chunk's name, not to its pack — into a new pack, durable with its index before the
 * old index and pack go), packs without an index (a backup that stopped between the two puts) are
 * deleted, and so are unreferenced tables and loose (format 1) chunks. A backup that reused an
 * unreferenced chunk holds the writer lock until its manifest is committed (the lock of its
 * process, shared by every restore point the process has open), so the sweep either waits for it
 * or sees its references.
 */
export async function garbageCollect(repo: Repository, options: GcOptions = {}): Promise<GcResult> {
  if (options.assumeRemoved && !options.dryRun) throw new StillpointError('gc: assumeRemoved is for a dry run only');
  // Live chunk names in a compact set: a mark phase holds every chunk of the repository.
  const live = { chunks: new ChunkNameSet(), tables: new Set<string>() };
  const seen = new Set<string>(options.assumeRemoved);
  const addManifest = async (m: Manifest) => {
    for (const disk of m.disks) {
      // Table pages are shared by restore points of a disk where it did not change: each read once.
      const reader = repo.data.tableReader(disk);
      for (const [k, pageId] of reader.pageIds.entries()) {
        if (live.tables.has(pageId)) continue;
        live.tables.add(pageId);
        let page: Buffer;
        try {
          page = await reader.page(k);
        } catch (cause) {
          throw new StillpointError(`garbage collection stopped: the chunk table of restore point ${m.id}, disk ${disk.id} cannot be read (page ${k}, ${keys.table(pageId)})`, {
            hint: 'run `stillpoint verify` and prune or repair the damaged restore point first; nothing was deleted',
            cause,
          });
        }
        live.chunks.addTablePage(page);
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
  const index = repo.data.packIndex;
  const name = (k: string) => k.slice(k.lastIndexOf('/') + 1);
  const repackBelow = options.repackBelow ?? 0.5;
  /** What the sweep would do with the packs, given what is live now. */
  const planPacks = async (): Promise<PackPlan> => {
    await index.sync();
    const packKeys = await repo.storage.list(keys.packsPrefix);
    const remove: string[] = [];
    const repack: string[] = [];
    const orphans: string[] = [];
    let deadChunks = 0;
    let deadBytes = 0;
    for (const key of packKeys) {
      const pack = name(key);
      const entries = index.packs.get(pack);
      if (!entries) {
        // No index: an orphan (but an index that cannot be read keeps its pack: verify reports it).
        if (!index.damaged.has(pack)) orphans.push(pack);
        continue;
      }
      let liveBytes = 0;
      let total = 0;
      let dead = 0;
      for (const e of entries) {
        total += e.length;
        // Live: named by a restore point, and the copy the index finds. Another copy (a repack
        // that stopped before its old pack was deleted) is dead: it would otherwise keep its pack.
        const at = live.chunks.has(e.id) ? index.get(e.id) : undefined;
        if (at && at.pack === pack && at.offset === e.offset) liveBytes += e.length;
        else dead++;
      }
      if (dead === 0) continue;
      if (liveBytes === 0) remove.push(pack);
      else if (liveBytes < total * repackBelow) repack.push(pack);
      else continue; // kept as it is: mostly live
      deadChunks += dead;
      deadBytes += total - liveBytes;
    }
    return { remove, repack, orphans, deadChunks, deadBytes };
  };

  // Mark.
  await markManifests();
  const looseKeys = (await repo.storage.list(keys.chunksPrefix)).filter((k) => !live.chunks.has(name(k)));
  const tableKeys = (await repo.storage.list(keys.tablesPrefix)).filter((k) => !live.tables.has(name(k)));
  const marked = await planPacks();
  const candidates = looseKeys.length + tableKeys.length + marked.deadChunks + marked.orphans.length;
  debug('gc mark: %d live chunks, %d candidates', live.chunks.size, candidates);
  const none = { deletedChunks: 0, deletedTables: 0, deletedPacks: 0, repackedPacks: 0, packBytesFreed: 0 };
  if (options.dryRun) return swept(candidates, marked, looseKeys.length, tableKeys.length);
  if (candidates === 0) return { candidates, ...none, deferred: false };

  // Sweep, under the writer lock.
  let release: () => Promise<void>;
  try {
    release = await repo.writerLock.exclusive('garbage collection', options.lockWaitMs ?? 0);
  } catch (error) {
    return { candidates, ...none, deferred: true, reason: (error as Error).message };
  }
  try {
    await markManifests();
    const plan = await planPacks();
    const deadLoose = looseKeys.filter((k) => !live.chunks.has(name(k)));
    const deadTables = tableKeys.filter((k) => !live.tables.has(name(k)));
    // Repack first (the new packs are durable, with their indexes, before an old one goes).
    if (plan.repack.length > 0) {
      const builder = new PackBuilder(repo.storage, repo.data.codec, index, repo.options.packSize ?? DEFAULT_PACK_SIZE);
      for (const pack of plan.repack) {
        const whole = await repo.storage.get(keys.pack(pack));
        for (const e of index.packs.get(pack) ?? []) {
          if (!live.chunks.has(e.id)) continue;
          if (index.get(e.id)?.pack !== pack) continue; // already held by another pack
          if (e.offset + e.length > whole.length) {
            throw new StillpointError(`garbage collection stopped: pack ${keys.pack(pack)} is shorter than its index says`, { hint: 'run `stillpoint verify --deep`; nothing of that pack was deleted' });
          }
          await builder.ready();
          builder.add(e.id, whole.subarray(e.offset, e.offset + e.length));
        }
      }
      await builder.finish();
    }
    for (const pack of [...plan.remove, ...plan.repack]) {
      await repo.storage.delete(keys.packIndex(pack));
      await repo.storage.delete(keys.pack(pack));
    }
    await runBounded(plan.orphans, 8, (p) => repo.storage.delete(keys.pack(p)));
    await runBounded(deadLoose, 8, (k) => repo.storage.delete(k));
    await runBounded(deadTables, 8, (k) => repo.storage.delete(k));
    await index.sync();
    return swept(candidates, plan, deadLoose.length, deadTables.length);
  } finally {
    await release();
  }
}
