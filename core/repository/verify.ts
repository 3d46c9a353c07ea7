import { createHash } from 'node:crypto';
import { ChunkNameSet } from './chunk-set.ts';
import { keys, tableEntry, tableEntryCount, type Manifest } from './format.ts';
import { runBounded } from './data.ts';
import type { Repository } from './repository.ts';

export interface VerifyOptions {
  /** Read, decrypt, decompress and re-hash chunks (default: only check that they exist). */
  deep?: boolean;
  /** With `deep`: check this percentage of the distinct chunks, chosen at random (default 100). */
  samplePercent?: number;
  /** Only these restore points (default: all). */
  restorePoints?: string[];
  onProgress?: (p: { phase: 'manifests' | 'chunks'; done: number; total: number }) => void;
}

export interface VerifyProblem {
  /** Disk id, or undefined for a problem with the manifest itself. */
  disk?: string;
  /** Chunk name (or chunk table name) that is damaged. */
  chunk?: string;
  /** Byte offset of the damaged chunk in the disk. */
  offset?: number;
  problem: string;
}

export interface DamagedRestorePoint {
  id: string;
  vm: string;
  job: string;
  problems: VerifyProblem[];
}

export interface VerifyReport {
  mode: 'quick' | 'deep' | 'sample';
  restorePoints: number;
  /** Distinct chunks referenced by the checked restore points. */
  chunksReferenced: number;
  /** Chunks actually checked (existence, or content when deep). */
  chunksChecked: number;
  damaged: DamagedRestorePoint[];
  /** Every damaged chunk name with what is wrong with it. */
  damagedChunks: Array<{ chunk: string; problem: string }>;
  ok: boolean;
}

/**
 * Quick: every chunk a restore point references exists. Deep: each is read, decrypted,
 * decompressed and re-hashed (all, or a random sample). Names every damaged restore point and chunk.
 */
export async function verifyRepository(repo: Repository, options: VerifyOptions = {}): Promise<VerifyReport> {
  const percent = options.samplePercent ?? 100;
  const mode: VerifyReport['mode'] = !options.deep ? 'quick' : percent >= 100 ? 'deep' : 'sample';
  const ids = options.restorePoints ?? (await repo.manifestIds());
  const manifests: Manifest[] = [];
  const damaged = new Map<string, DamagedRestorePoint>();
  const note = (m: { id: string; vm: string; job: string }, problem: VerifyProblem) => {
    let d = damaged.get(m.id);
    if (!d) damaged.set(m.id, (d = { id: m.id, vm: m.vm, job: m.job, problems: [] }));
    d.problems.push(problem);
  };

  // Load manifests and chunk tables; collect the distinct referenced chunks. A table is read once
  // (restore points of an unchanged disk share theirs) and not kept: memory grows with the
  // distinct chunks only (ChunkNameSet), however many restore points there are.
  const tablesRead = new Set<string>();
  const unreadable = new Set<string>();
  const referenced = new ChunkNameSet();
  let done = 0;
  for (const id of ids) {
    let m: Manifest;
    try {
      m = await repo.manifest(id);
    } catch (error) {
      note({ id, vm: '?', job: '?' }, { problem: `manifest cannot be read: ${(error as Error).message}` });
      continue;
    }
    manifests.push(m);
    for (const disk of m.disks) {
      const reader = repo.data.tableReader(disk);
      for (const [k, pageId] of reader.pageIds.entries()) {
        if (unreadable.has(pageId)) {
          note({ id: m.id, vm: m.vm.name, job: m.job }, { disk: disk.id, chunk: `table ${pageId}`, problem: 'chunk table cannot be read (see the restore point that reported it first)' });
          continue;
        }
        if (tablesRead.has(pageId)) continue;
        let page: Buffer;
        try {
          page = await reader.page(k);
        } catch (error) {
          unreadable.add(pageId);
          note({ id: m.id, vm: m.vm.name, job: m.job }, { disk: disk.id, chunk: `table ${pageId}`, problem: `chunk table cannot be read: ${(error as Error).message}` });
          continue;
        }
        tablesRead.add(pageId);
        referenced.addTablePage(page);
      }
    }
    done++;
    options.onProgress?.({ phase: 'manifests', done, total: ids.length });
  }

  // Check chunks.
  const bad = new Map<string, string>();
  let checked = 0;
  if (mode === 'quick') {
    const index = repo.data.packIndex;
    await index.sync();
    const packs = new Set((await repo.storage.list(keys.packsPrefix)).map((k) => k.slice(k.lastIndexOf('/') + 1)));
    const loose = new Set((await repo.storage.list(keys.chunksPrefix)).map((k) => k.slice(k.lastIndexOf('/') + 1)));
    for (const c of referenced) {
      const at = index.get(c);
      if (at && !packs.has(at.pack)) bad.set(c, `missing: its pack ${keys.pack(at.pack)} is missing`);
      else if (!at && !loose.has(c)) bad.set(c, damagedIndexes(index.damaged));
    }
    checked = referenced.size;
  } else {
    await repo.data.packIndex.sync();
    // The sample as numbers into the set (4 bytes a chunk), or every chunk.
    let sample: Iterable<string> = referenced;
    let total = referenced.size;
    if (percent < 100) {
      const picked: number[] = [];
      for (let n = 0; n < referenced.size; n++) if (sampled(referenced.at(n), percent)) picked.push(n);
      // A sample of a positive share always checks something, however few chunks there are.
      if (picked.length === 0 && referenced.size > 0 && percent > 0) picked.push(Math.floor(Math.random() * referenced.size));
      const numbers = Uint32Array.from(picked);
      sample = (function* () {
        for (const n of numbers) yield referenced.at(n);
      })();
      total = numbers.length;
    }
    await runBounded(sample, repo.data.workers.size * 2 + 2, async (c) => {
      try {
        await repo.data.readChunk(c, true);
      } catch (error) {
        const e = error as Error;
        bad.set(c, e.name === 'CorruptImageError' && /missing/.test(e.message)
          ? (/pack .* is missing/.test(e.message) ? `missing: ${e.message}` : damagedIndexes(repo.data.packIndex.damaged))
          : `damaged: ${e.message}`);
      }
      checked++;
      options.onProgress?.({ phase: 'chunks', done: checked, total });
    });
  }

  // Name the restore points that use a bad chunk (their tables read again: this is the rare case).
  if (bad.size > 0) {
    // One table page at a time (neighbouring restore points often share theirs).
    let lastName: string | null = null;
    let page: Buffer | null = null;
    for (const m of manifests) {
      for (const disk of m.disks) {
        const reader = repo.data.tableReader(disk);
        for (const [k, pageId] of reader.pageIds.entries()) {
          if (unreadable.has(pageId)) continue;
          if (lastName !== pageId) {
            lastName = pageId;
            page = await reader.page(k).catch(() => null);
          }
          if (!page) continue;
          const first = k * reader.pageChunks;
          const count = tableEntryCount(page);
          for (let i = 0; i < count; i++) {
            const c = tableEntry(page, i);
            const problem = c && bad.get(c);
            if (problem) note({ id: m.id, vm: m.vm.name, job: m.job }, { disk: disk.id, chunk: c, offset: (first + i) * disk.chunkSize, problem: `chunk ${problem}` });
          }
        }
      }
    }
  }
  const damagedList = [...damaged.values()].sort((a, b) => a.id.localeCompare(b.id));
  return {
    mode,
    restorePoints: ids.length,
    chunksReferenced: referenced.size,
    chunksChecked: checked,
    damaged: damagedList,
    damagedChunks: [...bad].map(([chunk, problem]) => ({ chunk, problem })),
    ok: damagedList.length === 0,
  };
}

/** Why a chunk is in no readable pack index: missing, or perhaps listed by an index that cannot be read. */
function damagedIndexes(damaged: ReadonlyMap<string, string>): string {
  if (damaged.size === 0) return 'missing';
  const [[pack, why]] = [...damaged];
  return `missing (or listed by a pack index that cannot be read: ${keys.packIndex(pack)}: ${why}${damaged.size > 1 ? `, and ${damaged.size - 1} more` : ''})`;
}

/** A random sample that differs between runs but is stable within one (salted by the run). */
const salt = Math.random().toString(36);
function sampled(chunk: string, percent: number): boolean {
  const h = createHash('sha256').update(salt).update(chunk).digest();
  return (h.readUInt32LE(0) / 0x1_0000_0000) * 100 < percent;
}
