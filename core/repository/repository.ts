import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import createDebug from 'debug';
import type { OpenDisk } from '../contracts/reader.ts';
import type { StorageTarget } from '../contracts/storage.ts';
import { ConfigError, CorruptImageError, NotFoundError, StillpointError } from '../errors.ts';
import { isKeyedChunkHash, type RepositoryKeys } from './codec.ts';
import { nativeBlake3 } from '../util/blake3.ts';
import { RepositoryData, runBounded, type DiskIdentity, type StoreDiskOptions, type StoreProgress } from './data.ts';
import {
  diskRecordSchema,
  formatVersionFor,
  keys,
  manifestSchema,
  MANIFEST_VERSION,
  PACKS_FORMAT_VERSION,
  REPOSITORY_FORMAT_VERSION,
  restorePointId,
  restorePointMetaSchema,
  storedConfigSchema,
  tablePageIds,
  type ChunkHash,
  type DiskRecord,
  type Manifest,
  type RestorePointMeta,
  type RestorePointSummary,
  type StoredConfig,
} from './format.ts';
import { createKeyFile, openKeyFile, type ScryptParams } from './keys.ts';
import { prefetchPackIndexes } from './packs.ts';
import { ProcessWriterLock, type LockOptions } from './lock.ts';
import type { RepositoryConfig } from './options.ts';
import { RetryingStorage, type RetryPolicy } from './storage-util.ts';
import { ChunkWorkers } from './workers.ts';
import { garbageCollect, prune, type GcOptions, type GcResult, type PruneResult } from './gc.ts';
import { restoreDisk, restoreRange, restoreVm, type RestoreDiskOptions, type RestoreProgress } from './restore.ts';
import type { Retention } from './retention.ts';
import { verifyRepository, type VerifyOptions, type VerifyReport } from './verify.ts';
import type { Writable } from 'node:stream';

const debug = createDebug('stillpoint:repository');

/** Manifests read at once (each is a get and a decrypt; a repository holds hundreds). */
const MANIFESTS_AT_ONCE = 8;

export interface OpenRepositoryOptions {
  /** Create the repository when the storage target holds none (with the config's chunk size, compression and encryption). */
  create?: boolean;
  /** The passphrase; otherwise it comes from `config.encryption.passphraseEnv` / `passphraseFile`. */
  passphrase?: string;
  /** Environment for `passphraseEnv` (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Directory `passphraseFile` is relative to (default the working directory). */
  configDir?: string;
  /** scrypt cost for a new repository's key (tests use a small one). */
  scrypt?: ScryptParams;
  /** Chunk workers (default: one per core, at most 4). */
  workers?: number;
  retry?: RetryPolicy;
  lock?: LockOptions;
  /** Target size of a pack file (default 16 MiB; tests use small ones). */
  packSize?: number;
  /** Entries per chunk table page of the disks this process stores (default 65536; tests use small ones). */
  tablePageChunks?: number;
  /**
   * A local directory where the pack index goes once it outgrows memory (more than `memoryChunks`
   * chunks), kept between runs (`<cacheDir>/<repository id>/`): what bounds a backup's memory
   * whatever the size of the repository. Without it the whole index is kept in memory (about 60
   * bytes a chunk).
   */
  cacheDir?: string;
  /** Chunks of the pack index kept in memory before it goes to `cacheDir` (default 1,000,000). */
  memoryChunks?: number;
  /**
   * Load the pack index at once (a backup or a restore needs it; listing restore points does
   * not): fetched while the keys are derived from the passphrase, decoded in the background.
   */
  loadIndex?: boolean;
  /**
   * The process is about to write restore points (a backup): join the writer lock while the keys
   * are derived, instead of after (its round trips and race check cost ~25 ms). `writer` is the
   * lock's purpose; the first restore point started holds the lock from then on, `close` lets go.
   */
  writer?: string;
}

/** Where to find the passphrase, per the config; undefined when the config asks for no encryption. */
export async function resolvePassphrase(config: RepositoryConfig, options: OpenRepositoryOptions): Promise<string | undefined> {
  if (options.passphrase !== undefined) return options.passphrase;
  const enc = config.encryption;
  if (!enc) return undefined;
  if (enc.passphraseEnv) {
    const value = (options.env ?? process.env)[enc.passphraseEnv];
    if (value) return value;
  }
  if (enc.passphraseFile) {
    const path = options.configDir && !enc.passphraseFile.startsWith('/') ? `${options.configDir}/${enc.passphraseFile}` : enc.passphraseFile;
    try {
      return (await readFile(path, 'utf8')).replace(/\r?\n$/, '');
    } catch (cause) {
      throw new ConfigError([`repository.encryption.passphraseFile: cannot read ${path}: ${(cause as Error).message}`]);
    }
  }
  throw new ConfigError([
    `repository.encryption: no passphrase: set the environment variable ${enc.passphraseEnv ?? '(passphraseEnv not set)'} or give a readable passphraseFile`,
  ]);
}

/** Open (or, with `create`, initialise) the repository on a storage target. */
export async function openRepository(storage: StorageTarget, config: RepositoryConfig, opts: OpenRepositoryOptions = {}): Promise<Repository> {
  const rs = new RetryingStorage(storage, opts.retry);
  const where = `repository on ${storage.name}`;
  let stored = await loadStoredConfig(rs, where);
  const passphrase = await resolvePassphrase(config, opts).catch((error) => {
    // An unencrypted existing repository needs no passphrase.
    if (stored && stored.encryption === null) return undefined;
    throw error;
  });
  let repoKeys: RepositoryKeys | null = null;
  let indexes: Promise<Map<string, Promise<Buffer>>> | null = null;
  // The key file is read and scrypt started before anything else: the workers' start-up and the
  // reads below (lock, pack indexes) would otherwise hold it back by ~30 ms.
  let unwrapped: Promise<RepositoryKeys | null> | null = null;
  if (stored?.encryption && passphrase) {
    unwrapped = (await unwrapKeys(rs, stored.id, passphrase, storage.name)).keys;
    unwrapped.catch(() => undefined);
  }
  // Start the chunk workers now: they load while the key is derived.
  const started = stored ? new ChunkWorkers(undefined, { compressionLevel: stored.compression.level, chunkHash: stored.chunkHash }, opts.workers) : undefined;
  const writerLock = new ProcessWriterLock(rs, opts.lock);
  const joined = stored && opts.writer ? writerLock.share(opts.writer) : null;
  joined?.catch(() => undefined); // a lock held elsewhere: startRestorePoint says so (or waits)
  let data: RepositoryData;
  try {
    if (!stored) {
      if (!opts.create) {
        throw new NotFoundError('there is no Stillpoint repository here', { where, hint: 'create one with `stillpoint init` (or open with create: true)' });
      }
      const id = randomBytes(16).toString('hex');
      const named = config.chunkHash ?? (nativeBlake3() ? 'blake3' : 'sha256');
      const chunkHash: ChunkHash = named === 'blake3' ? (passphrase ? 'blake3-keyed' : 'blake3') : passphrase ? 'hmac-sha256' : 'sha256';
      const newConfig: StoredConfig = {
        format: 'stillpoint-repository',
        version: formatVersionFor(chunkHash),
        id,
        createdAt: new Date().toISOString(),
        chunkSize: config.chunkSize,
        chunkHash,
        compression: { algorithm: 'zstd', level: config.compression.level },
        encryption: passphrase ? { cipher: 'aes-256-gcm', kdf: 'scrypt' } : null,
      };
      if ((config.chunkSize & (config.chunkSize - 1)) !== 0) {
        throw new ConfigError([`repository.chunkSize: ${config.chunkSize} is not a power of two`]);
      }
      if (passphrase) {
        const { keys: k, file } = await createKeyFile(id, passphrase, opts.scrypt);
        await rs.put(keys.key(randomBytes(8).toString('hex')), Buffer.from(JSON.stringify(file, null, 2)));
        repoKeys = k;
      }
      // The config is written last: its presence means the repository is complete.
      await rs.put(keys.config, Buffer.from(JSON.stringify(newConfig, null, 2)));
      stored = newConfig;
      debug('created repository %s on %s (encrypted: %s)', id, storage.name, !!passphrase);
    } else if (stored.encryption) {
      if (!unwrapped) {
        throw new ConfigError(['the repository is encrypted: configure repository.encryption.passphraseEnv or passphraseFile (or pass a passphrase)'], { where });
      }
      if (opts.loadIndex) {
        // While scrypt runs (~0.1 s), fetch the pack indexes; they are decoded once the keys are known.
        indexes = prefetchPackIndexes(rs);
        indexes.catch(() => undefined);
      }
      repoKeys = await unwrapped;
      if (!repoKeys) throw new ConfigError(['the passphrase does not open any key of this repository'], { where });
    }
    // Inside the guard: it fails where this process cannot name the repository's chunks (BLAKE3
    // needs the native library), and the workers and the lock must not outlive that.
    data = new RepositoryData(rs, stored, repoKeys, {
      workers: opts.workers, retry: opts.retry, started, packSize: opts.packSize, tablePageChunks: opts.tablePageChunks,
      cacheDir: opts.cacheDir, memoryChunks: opts.memoryChunks,
    });
  } catch (error) {
    await started?.close();
    await joined?.then((leave) => leave(), () => undefined);
    throw error;
  }
  if (opts.loadIndex) {
    if (indexes) data.packIndex.adopt(indexes);
    // Decoded in the background while the caller goes on. Not for a backup: decoding holds this
    // thread, and a backup first reads the previous restore point, whose reads waited behind it
    // (12-16 ms); `storeDisk` decodes it while the first chunks are read and sealed.
    if (!opts.writer) data.packIndex.sync().catch(() => undefined);
  }
  // Joined by now unless the storage is slower than scrypt (a refusal is reported by startRestorePoint).
  await joined?.catch(() => undefined);
  return new Repository(data, opts, writerLock, joined);
}

/**
 * The repository's keys from the first key file `passphrase` opens (one scrypt per key file
 * tried), or null. Returns once the first key file is read and its scrypt has started.
 */
async function unwrapKeys(rs: RetryingStorage, repositoryId: string, passphrase: string, storageName: string): Promise<{ keys: Promise<RepositoryKeys | null> }> {
  const names = await rs.list(keys.keysPrefix);
  const read = async (key: string): Promise<unknown> => {
    const raw = await rs.get(key);
    try {
      return JSON.parse(raw.toString('utf8'));
    } catch (cause) {
      throw new CorruptImageError('the key file is not JSON', { where: `${storageName}:${key}`, cause, hint: 'restore it from a copy of the repository (it holds the wrapped keys)' });
    }
  };
  const first = names.length ? await read(names[0]) : null;
  const tryAll = async (): Promise<RepositoryKeys | null> => {
    for (const [i, key] of names.entries()) {
      const opened = await openKeyFile(repositoryId, i === 0 ? first : await read(key), passphrase, `${storageName}:${key}`);
      if (opened) return opened;
    }
    return null;
  };
  return { keys: tryAll() };
}

async function loadStoredConfig(rs: RetryingStorage, where: string): Promise<StoredConfig | null> {
  const raw = await rs.getOrNull(keys.config);
  if (!raw) return null;
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch (cause) {
    throw new CorruptImageError('the repository config is not JSON', { where: `${where}: ${keys.config}`, cause });
  }
  const parsed = storedConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new CorruptImageError(`the repository config is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, { where: `${where}: ${keys.config}` });
  }
  const stored = parsed.data;
  if (stored.version > REPOSITORY_FORMAT_VERSION) {
    throw new StillpointError(`repository format version ${stored.version} is newer than this Stillpoint understands (${REPOSITORY_FORMAT_VERSION})`, { where, hint: 'upgrade Stillpoint' });
  }
  // An encrypted repository names chunks with its id key, an unencrypted one has none.
  if (isKeyedChunkHash(stored.chunkHash) !== (stored.encryption !== null)) {
    throw new CorruptImageError(`the repository config is not valid: chunkHash ${stored.chunkHash} with encryption ${stored.encryption ? 'on' : 'off'}`, { where: `${where}: ${keys.config}` });
  }
  return stored;
}

/** Result of `storeDisk`, also reported per disk by the engine. */
export interface StoreDiskResult {
  bytesRead: number;
  bytesStored: number;
  /** Bytes read that were unchanged at their place since the previous restore point (hashed only). */
  bytesUnchanged: number;
  fullRead: boolean;
  reason?: string;
}

export class Repository {
  /** The writer lock of this writing process: shared by its restore points, exclusive for gc's sweep. */
  readonly writerLock: ProcessWriterLock;

  /** The writer lock joined while the repository was opened (`writer`), until a restore point holds it. */
  private joinedEarly: Promise<() => Promise<void>> | null;

  constructor(readonly data: RepositoryData, readonly options: OpenRepositoryOptions = {}, writerLock?: ProcessWriterLock, joinedEarly?: Promise<() => Promise<void>> | null) {
    this.writerLock = writerLock ?? new ProcessWriterLock(data.storage, options.lock);
    this.joinedEarly = joinedEarly ?? null;
  }

  /** Let go of the writer lock joined early (once a restore point holds it, or on close). */
  private async leaveEarly(): Promise<void> {
    const early = this.joinedEarly;
    this.joinedEarly = null;
    await early?.then((leave) => leave(), () => undefined);
  }

  get storage(): RetryingStorage {
    return this.data.storage;
  }
  get config(): StoredConfig {
    return this.data.config;
  }

  /**
   * Begin a restore point: joins this process's writer lock (taken from the storage target by the
   * first open restore point; a stale owner is detected and taken over). Any number of restore
   * points may be written at once by one `Repository`; another process is refused (or waits).
   */
  async startRestorePoint(meta: RestorePointMeta): Promise<RestorePointWriter> {
    const parsed = restorePointMetaSchema.safeParse(meta);
    if (!parsed.success) {
      throw new ConfigError(parsed.error.issues.map((i) => `restore point ${i.path.join('.')}: ${i.message}`));
    }
    const release = await this.writerLock.share(`backup of VM ${meta.vm.name} (job ${meta.job})`);
    await this.leaveEarly();
    try {
      await this.upgradeFormat();
      const previous = await this.latest(meta.vm.id);
      return new RestorePointWriter(this, parsed.data as RestorePointMeta, previous, release);
    } catch (error) {
      await release();
      throw error;
    }
  }

  /**
   * A version 1 repository (one object per chunk) gets packs from now on: its config says version
   * 2, so that an older Stillpoint refuses it instead of missing the packed chunks. Under the lock.
   */
  private async upgradeFormat(): Promise<void> {
    if (this.config.version >= PACKS_FORMAT_VERSION) return;
    const upgraded: StoredConfig = { ...this.config, version: PACKS_FORMAT_VERSION };
    await this.storage.put(keys.config, Buffer.from(JSON.stringify(upgraded, null, 2)));
    (this.data as { config: StoredConfig }).config = upgraded;
    debug('repository upgraded to format version %d (pack files)', PACKS_FORMAT_VERSION);
  }

  async manifestIds(): Promise<string[]> {
    return (await this.storage.list(keys.restorePointsPrefix)).map((k) => k.slice(keys.restorePointsPrefix.length)).sort();
  }

  /** Load one restore point's manifest. */
  async manifest(id: string): Promise<Manifest> {
    const key = keys.restorePoint(id);
    let plain: Buffer;
    try {
      plain = await this.data.getBlob(key);
    } catch (error) {
      if (error instanceof NotFoundError) throw new NotFoundError(`there is no restore point ${id}`, { where: this.storage.name, hint: 'list them with `stillpoint list`' });
      throw error;
    }
    const parsed = manifestSchema.safeParse(JSON.parse(plain.toString('utf8')));
    if (!parsed.success) {
      throw new CorruptImageError(`manifest is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, { where: key });
    }
    if (parsed.data.version > MANIFEST_VERSION) {
      throw new StillpointError(`manifest version ${parsed.data.version} is newer than this Stillpoint understands`, { where: key, hint: 'upgrade Stillpoint' });
    }
    return parsed.data;
  }

  /**
   * What this process knows of each restore point without loading its manifest again: manifests
   * are never changed once written, so each is read once per process (a job of V VMs in a
   * repository of M restore points reads M manifests, not V x M, to find each VM's latest).
   */
  private readonly catalog = new Map<string, CatalogEntry>();

  /** Every manifest that `filter` matches, oldest first (by point-in-time, then id). */
  async manifests(filter: RestorePointFilter = {}): Promise<Manifest[]> {
    const loaded = new Map<string, Manifest>();
    const entries = await this.catalogEntries(filter, loaded);
    // Those known from an earlier call were not loaded by this one (read as many at a time as above).
    const out: Manifest[] = new Array(entries.length);
    await runBounded(entries.keys(), MANIFESTS_AT_ONCE, async (i) => {
      out[i] = loaded.get(entries[i].id) ?? (await this.manifest(entries[i].id));
    });
    return out;
  }

  async list(filter: RestorePointFilter = {}): Promise<RestorePointSummary[]> {
    return (await this.manifests(filter)).map(summarise);
  }

  /** The newest restore point of a VM (by id or name), or null. */
  async latest(vmId: string): Promise<Manifest | null> {
    const loaded = new Map<string, Manifest>();
    const entries = await this.catalogEntries({ vm: vmId }, loaded);
    const newest = entries[entries.length - 1];
    return newest ? loaded.get(newest.id) ?? this.manifest(newest.id) : null;
  }

  /**
   * The catalog entries of the stored restore points that `filter` matches, oldest first. Restore
   * points not in the catalog yet are loaded (several at a time: each is a get and a decrypt) and
   * those that match are left in `loaded`; those no longer listed leave the catalog.
   */
  private async catalogEntries(filter: RestorePointFilter, loaded: Map<string, Manifest>): Promise<CatalogEntry[]> {
    const ids = await this.manifestIds();
    const listed = new Set(ids);
    for (const id of this.catalog.keys()) if (!listed.has(id)) this.catalog.delete(id);
    const unknown = ids.filter((id) => !this.catalog.has(id));
    await runBounded(unknown, MANIFESTS_AT_ONCE, async (id) => {
      const m = await this.manifest(id);
      if (matches(this.remember(m), filter)) loaded.set(m.id, m);
    });
    return ids
      .map((id) => this.catalog.get(id)!)
      .filter((e) => matches(e, filter))
      .sort((a, b) => a.time - b.time || a.id.localeCompare(b.id));
  }

  /** Put a manifest (loaded, or just written by this process) in the catalog. */
  remember(m: Manifest): CatalogEntry {
    const entry: CatalogEntry = { id: m.id, job: m.job, vmId: m.vm.id, vmName: m.vm.name, time: Date.parse(m.time) };
    this.catalog.set(m.id, entry);
    return entry;
  }

  /** Resolve "latest" or an id prefix to a manifest, optionally for a VM. */
  async resolve(ref: string, vm?: string): Promise<Manifest> {
    if (ref === 'latest') {
      if (!vm) throw new ConfigError(['restore point "latest" needs a VM']);
      const m = await this.latest(vm);
      if (!m) throw new NotFoundError(`VM ${vm} has no restore point`, { where: this.storage.name });
      return m;
    }
    const ids = (await this.manifestIds()).filter((id) => id.startsWith(ref));
    if (ids.length === 0) throw new NotFoundError(`there is no restore point ${ref}`, { where: this.storage.name, hint: 'list them with `stillpoint list`' });
    if (ids.length > 1) throw new ConfigError([`restore point ${ref} is ambiguous: ${ids.slice(0, 5).join(', ')}`]);
    return this.manifest(ids[0]);
  }

  /** Restore one disk of a restore point (id, id prefix, or "latest" with `vm`) to a raw image or a dynamic VHDX. */
  async restoreDisk(restorePoint: string, diskId: string, path: string, options: RestoreDiskOptions & { vm?: string } = {}): Promise<{ bytes: number }> {
    return restoreDisk(this, await this.resolve(restorePoint, options.vm), diskId, path, options);
  }

  /** Restore every disk of a restore point into a folder (one file per disk). */
  async restoreVm(restorePoint: string, folder: string, options: RestoreDiskOptions & { vm?: string } = {}): Promise<Array<{ disk: string; path: string }>> {
    return restoreVm(this, await this.resolve(restorePoint, options.vm), folder, options);
  }

  /** Write a byte range of a disk to a stream (e.g. stdout). */
  async restoreRange(
    restorePoint: string,
    diskId: string,
    range: { offset: number; length?: number },
    out: Writable,
    options: { vm?: string; onProgress?: (p: RestoreProgress) => void } = {},
  ): Promise<{ bytes: number }> {
    return restoreRange(this, await this.resolve(restorePoint, options.vm), diskId, range, out, options);
  }

  /** Quick (existence), deep (content) or sample verification; names damaged restore points and chunks. */
  verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    return verifyRepository(this, options);
  }

  /** Remove the restore points the retention does not keep (chunks are freed by `gc`). */
  prune(retention: Retention, options: { job?: string; vm?: string; dryRun?: boolean } = {}): Promise<PruneResult> {
    return prune(this, retention, options);
  }

  /** Delete chunks and tables no restore point references; safe while a backup runs. */
  gc(options: GcOptions = {}): Promise<GcResult> {
    return garbageCollect(this, options);
  }

  async close(): Promise<void> {
    await this.leaveEarly();
    await this.data.close();
    await this.storage.target.close?.();
  }
}

/** Which restore points a listing is about: a job, a VM (by id or name). */
export interface RestorePointFilter {
  job?: string;
  vm?: string;
}

/** A restore point as the catalog knows it: what filtering and ordering need. */
interface CatalogEntry {
  id: string;
  job: string;
  vmId: string;
  vmName: string;
  /** Point-in-time, in ms. */
  time: number;
}

function matches(e: CatalogEntry, filter: RestorePointFilter): boolean {
  return (!filter.job || e.job === filter.job) && (!filter.vm || e.vmId === filter.vm || e.vmName === filter.vm);
}

export function summarise(m: Manifest): RestorePointSummary {
  return {
    id: m.id,
    job: m.job,
    vm: { id: m.vm.id, name: m.vm.name },
    time: m.time,
    consistency: m.consistency,
    disks: m.disks.map((d) => ({ id: d.id, virtualSize: d.virtualSize })),
    bytesStored: m.disks.reduce((n, d) => n + d.bytesStored, 0),
  };
}

/**
 * One restore point being written. Disks are added with `storeDisk` (read here) or `addDisk`
 * (a record stored elsewhere, e.g. by an off-host proxy with `storeDiskData`); `commit` writes
 * the manifest last and atomically; `abort` leaves no restore point behind.
 */
export class RestorePointWriter {
  private readonly disks = new Map<string, DiskRecord>();
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    readonly repository: Repository,
    readonly meta: RestorePointMeta,
    /** The VM's latest restore point before this one: the base of incrementals. */
    readonly previous: Manifest | null,
    /** Leaves this process's writer lock (the last writer out releases it). */
    private readonly releaseLock: () => Promise<void>,
  ) {}

  /** The previous restore point's record of a disk, to hand to `storeDiskData` on a proxy. */
  previousDisk(diskId: string): DiskRecord | null {
    return this.previous?.disks.find((d) => d.id === diskId) ?? null;
  }

  async storeDisk(
    disk: DiskIdentity,
    source: OpenDisk,
    opts: {
      changed?: StoreDiskOptions['changed'];
      fullReadReason?: string;
      onProgress?: (p: StoreProgress) => void;
      signal?: AbortSignal;
    } = {},
  ): Promise<StoreDiskResult> {
    this.assertOpen();
    const record = await this.repository.data.storeDiskData(disk, source, {
      previous: this.previousDisk(disk.id),
      previousId: this.previous?.id ?? null,
      changed: opts.changed,
      fullReadReason: opts.fullReadReason,
      onProgress: opts.onProgress,
      signal: opts.signal,
    });
    await this.addDisk(record);
    return { bytesRead: record.bytesRead, bytesStored: record.bytesStored, bytesUnchanged: record.bytesUnchanged ?? 0, fullRead: record.fullRead, reason: record.reason };
  }

  /** Attach a disk stored by `storeDiskData` (here or on a proxy); its chunk table must exist. */
  async addDisk(record: DiskRecord): Promise<void> {
    this.assertOpen();
    const parsed = diskRecordSchema.safeParse(record);
    if (!parsed.success) {
      throw new StillpointError(`disk record is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, { where: `disk ${record?.id}` });
    }
    if (this.disks.has(record.id)) throw new StillpointError('disk was stored twice in one restore point', { where: `VM ${this.meta.vm.name}, disk ${record.id}` });
    for (const page of tablePageIds(parsed.data)) {
      if ((await this.repository.storage.head(keys.table(page))) === null) {
        throw new StillpointError('the chunk table of this disk is not in the repository', { where: `VM ${this.meta.vm.name}, disk ${record.id}: ${keys.table(page)}`, hint: 'store the disk again' });
      }
    }
    this.disks.set(record.id, parsed.data);
  }

  /**
   * Write the manifest (after every chunk and table is durable) and release the lock. `referencePoint`
   * (the driver's change-tracking reference point, known only once the disks are read) is stored in
   * the manifest, where the VM's next backup finds it.
   */
  async commit(extra: { referencePoint?: unknown } = {}): Promise<{ id: string }> {
    this.assertOpen();
    const id = restorePointId(new Date(), randomBytes(4).toString('hex'));
    const manifest: Manifest = manifestSchema.parse({
      format: 'stillpoint-restore-point',
      version: MANIFEST_VERSION,
      id,
      ...this.meta,
      ...(extra.referencePoint !== undefined ? { referencePoint: extra.referencePoint } : {}),
      committedAt: new Date().toISOString(),
      previous: this.previous?.id ?? null,
      disks: [...this.disks.values()],
    });
    try {
      await this.repository.data.putBlob(keys.restorePoint(id), Buffer.from(JSON.stringify(manifest)));
    } catch (error) {
      await this.abort();
      throw error;
    }
    this.state = 'committed';
    this.repository.remember(manifest);
    await this.releaseLock();
    debug('committed restore point %s of VM %s', id, this.meta.vm.name);
    return { id };
  }

  /** Give up: no manifest is written (stored chunks are unreferenced until `gc`), the lock is released. */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.releaseLock();
  }

  private assertOpen(): void {
    if (this.state !== 'open') throw new StillpointError(`the restore point was already ${this.state}`, { where: `VM ${this.meta.vm.name}` });
  }
}
