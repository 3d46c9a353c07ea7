import { z } from 'zod';

/**
 * The repository's stored shapes (documented in docs/repository-format.md). Every stored JSON
 * document carries `format` and `version`; a reader refuses a version it does not know.
 */
/**
 * 3: chunks may be named with BLAKE3 (`chunkHash`); 2: chunks are stored in pack files (`packs/`,
 * indexed by `index/`); 1: one object per chunk (`chunks/`, still read).
 */
export const REPOSITORY_FORMAT_VERSION = 3;
/** The version from which chunks are packed: a version 1 repository is raised to it by its first backup. */
export const PACKS_FORMAT_VERSION = 2;

/** The version a new repository gets: the lowest that knows its chunk hash, so older Stillpoints read what they can. */
export function formatVersionFor(chunkHash: ChunkHash): number {
  return chunkHash.startsWith('blake3') ? REPOSITORY_FORMAT_VERSION : PACKS_FORMAT_VERSION;
}
export const MANIFEST_VERSION = 1;

export const keys = {
  config: 'config',
  key: (id: string) => `keys/${id}`,
  keysPrefix: 'keys/',
  chunk: (id: string) => `chunks/${id.slice(0, 2)}/${id}`,
  chunksPrefix: 'chunks/',
  pack: (id: string) => `packs/${id.slice(0, 2)}/${id}`,
  packsPrefix: 'packs/',
  packIndex: (id: string) => `index/${id}`,
  packIndexPrefix: 'index/',
  table: (id: string) => `tables/${id.slice(0, 2)}/${id}`,
  tablesPrefix: 'tables/',
  restorePoint: (id: string) => `restore-points/${id}`,
  restorePointsPrefix: 'restore-points/',
  writerLock: 'locks/writer',
} as const;

/**
 * How a repository names its chunks: the hash of a chunk's plaintext, keyed with the repository's
 * id key in an encrypted repository (so that names do not reveal content). BLAKE3 (the default
 * since format version 3) runs 3-4x faster than SHA-256 even with the CPU's SHA extensions;
 * hashing was a fifth of a backup's CPU (docs/repository-performance.md).
 */
export const CHUNK_HASHES = ['blake3', 'blake3-keyed', 'sha256', 'hmac-sha256'] as const;
export type ChunkHash = (typeof CHUNK_HASHES)[number];

/** The `config` object: plain JSON, not secret. */
export const storedConfigSchema = z.object({
  format: z.literal('stillpoint-repository'),
  version: z.number().int(),
  id: z.string().regex(/^[0-9a-f]{32}$/),
  createdAt: z.string(),
  chunkSize: z.number().int().min(4096),
  /** How chunks are named (`CHUNK_HASHES`); an encrypted repository uses a keyed hash. */
  chunkHash: z.enum(CHUNK_HASHES),
  compression: z.object({ algorithm: z.literal('zstd'), level: z.number().int() }),
  encryption: z.object({ cipher: z.literal('aes-256-gcm'), kdf: z.literal('scrypt') }).nullable(),
});
export type StoredConfig = z.output<typeof storedConfigSchema>;

/** A `keys/<id>` object: the repository's key material, wrapped with a key derived from a passphrase. */
export const keyFileSchema = z.object({
  format: z.literal('stillpoint-key'),
  version: z.literal(1),
  createdAt: z.string(),
  kdf: z.object({
    name: z.literal('scrypt'),
    N: z.number().int(),
    r: z.number().int(),
    p: z.number().int(),
    salt: z.string(),
  }),
  /** base64 of nonce (12) | AES-256-GCM ciphertext of encKey (32) | idKey (32) | tag (16). */
  wrapped: z.string(),
});
export type KeyFile = z.output<typeof keyFileSchema>;

/** One disk of a restore point: serialisable, produced by `storeDiskData` (possibly on a proxy). */
export const diskRecordSchema = z.object({
  id: z.string().min(1),
  virtualSize: z.number().int().nonnegative(),
  logicalSectorSize: z.number().int().positive(),
  chunkSize: z.number().int().positive(),
  chunkCount: z.number().int().nonnegative(),
  /**
   * Names of the chunk table's pages (`tables/<xx>/<page>`), in order, each of `tablePageChunks`
   * entries (the last may hold fewer).
   */
  tablePages: z.array(z.string().regex(/^[0-9a-f]{64}$/)).min(1).optional(),
  tablePageChunks: z.number().int().positive().optional(),
  /** Name of the whole chunk table as one blob: restore points written before tables had pages. */
  table: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  dataChunks: z.number().int().nonnegative(),
  zeroChunks: z.number().int().nonnegative(),
  /** Bytes read from the source disk for this restore point. */
  bytesRead: z.number().int().nonnegative(),
  /** Bytes of new blobs this restore point added to the repository. */
  bytesStored: z.number().int().nonnegative(),
  /**
   * Bytes read whose chunk was the one at the same place in the previous restore point: named by
   * its hash only, not compressed or encrypted again (absent in restore points of older versions).
   */
  bytesUnchanged: z.number().int().nonnegative().optional(),
  /** True when every allocated extent was read (no usable change tracking). */
  fullRead: z.boolean(),
  /** Why a full read happened, or what the incremental was based on. */
  reason: z.string().optional(),
}).refine((d) => (d.tablePages !== undefined && d.tablePageChunks !== undefined && d.table === undefined) || (d.table !== undefined && d.tablePages === undefined && d.tablePageChunks === undefined), {
  message: 'a disk has either tablePages with tablePageChunks, or table',
});
export type DiskRecord = z.output<typeof diskRecordSchema>;

/** The names of a disk's chunk table pages, in order (one for a table written before pages). */
export function tablePageIds(disk: DiskRecord): string[] {
  return disk.tablePages ?? [disk.table!];
}

export const consistencySchema = z.object({
  method: z.enum(['online', 'crash-consistent', 'offline']),
  level: z.enum(['application', 'crash']),
  reason: z.string(),
});

export const restorePointMetaSchema = z.object({
  job: z.string().min(1),
  vm: z.object({
    id: z.string().min(1),
    name: z.string(),
    driver: z.string(),
    configuration: z.record(z.string(), z.unknown()).optional(),
  }),
  consistency: consistencySchema,
  /** When the point in time was taken (the checkpoint), ISO 8601. */
  time: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'not an ISO 8601 time'),
  referencePoint: z.unknown().optional(),
});
export type RestorePointMeta = z.input<typeof restorePointMetaSchema>;

export const manifestSchema = restorePointMetaSchema.extend({
  format: z.literal('stillpoint-restore-point'),
  version: z.number().int(),
  id: z.string().regex(/^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$/),
  committedAt: z.string(),
  /** The restore point of the same VM this one was made incremental against (informational). */
  previous: z.string().nullable(),
  disks: z.array(diskRecordSchema),
});
export type Manifest = z.output<typeof manifestSchema>;

export interface RestorePointSummary {
  id: string;
  job: string;
  vm: { id: string; name: string };
  time: string;
  consistency: Manifest['consistency'];
  disks: Array<{ id: string; virtualSize: number }>;
  bytesStored: number;
}

export const lockSchema = z.object({
  format: z.literal('stillpoint-lock'),
  host: z.string(),
  pid: z.number().int(),
  session: z.string(),
  purpose: z.string(),
  acquiredAt: z.string(),
  heartbeatAt: z.string(),
});
export type LockInfo = z.output<typeof lockSchema>;

/** A restore point id: the commit time (UTC, to the second) and 8 random hex digits; sorts by time. */
export function restorePointId(date: Date, random: string): string {
  const iso = date.toISOString();
  const compact = iso.slice(0, 19).replace(/[-:]/g, '');
  return `${compact}Z-${random}`;
}

/**
 * Chunk table page blob: "SPT" | version (1 byte) | u32 chunkSize | u64 virtualSize | u32 chunkCount
 * (of the whole disk) | u32 first entry | 32 bytes a chunk (entries first .. first + count). Version 2
 * is a page of a paged table; version 1, the whole table of a disk in one blob (first entry 0),
 * still read. An all-zero entry is a zero chunk: recorded, not stored.
 */
export const TABLE_HEADER = 24;
export const ZERO_ENTRY = Buffer.alloc(32);
/** Entries per chunk table page: 2 MiB of entries, 16 GiB of disk with 256 KiB chunks. */
export const TABLE_PAGE_CHUNKS = 65536;

/** A page of `count` zero entries starting at entry `first`. */
export function newTablePage(chunkSize: number, virtualSize: number, first: number, count: number): Buffer {
  const chunkCount = Math.ceil(virtualSize / chunkSize);
  const page = Buffer.alloc(TABLE_HEADER + count * 32);
  page.write('SPT', 0, 'ascii');
  page[3] = 2;
  page.writeUInt32LE(chunkSize, 4);
  page.writeBigUInt64LE(BigInt(virtualSize), 8);
  page.writeUInt32LE(chunkCount, 16);
  page.writeUInt32LE(first, 20);
  return page;
}

export function parseTablePage(buf: Buffer, where: string): { chunkSize: number; virtualSize: number; chunkCount: number; firstIndex: number; count: number } {
  if (buf.length < TABLE_HEADER || buf.toString('ascii', 0, 3) !== 'SPT' || (buf[3] !== 1 && buf[3] !== 2)) {
    throw new Error(`${where}: not a chunk table (version 1 or 2)`);
  }
  const chunkSize = buf.readUInt32LE(4);
  const virtualSize = Number(buf.readBigUInt64LE(8));
  const chunkCount = buf.readUInt32LE(16);
  const firstIndex = buf[3] === 1 ? 0 : buf.readUInt32LE(20);
  const count = tableEntryCount(buf);
  if (chunkSize === 0 || !Number.isInteger(count) || chunkCount !== Math.ceil(virtualSize / chunkSize) || firstIndex + count > chunkCount || (buf[3] === 1 && count !== chunkCount)) {
    throw new Error(`${where}: chunk table length does not match its header`);
  }
  return { chunkSize, virtualSize, chunkCount, firstIndex, count };
}

/** How many entries a table page holds (a fraction when its length is not whole entries). */
export function tableEntryCount(page: Buffer): number {
  return (page.length - TABLE_HEADER) / 32;
}

/** Whether entry `index` of a table page is a zero chunk (compared in place, no string made). */
export function isZeroEntry(table: Buffer, index: number): boolean {
  const start = TABLE_HEADER + index * 32;
  return table.compare(ZERO_ENTRY, 0, 32, start, start + 32) === 0;
}

export function tableEntry(table: Buffer, index: number): string | null {
  if (isZeroEntry(table, index)) return null;
  const start = TABLE_HEADER + index * 32;
  return table.toString('hex', start, start + 32);
}

export function setTableEntry(table: Buffer, index: number, id: string | null): void {
  const start = TABLE_HEADER + index * 32;
  if (id === null) table.fill(0, start, start + 32);
  else table.write(id, start, 32, 'hex');
}
