import { z } from 'zod';

/**
 * The `repository` section of the config. The config schema (core/config) embeds this schema;
 * the repository code owns it.
 */
export const repositoryConfigSchema = z.object({
  /** The storage target: a plugin that taps `resolveStorage` (built in: "local", "sftp"). */
  storage: z.object({
    type: z.string().min(1),
    options: z.record(z.string(), z.unknown()).default({}),
  }),
  /**
   * Chunk size in bytes (power of two, 64 KiB .. 64 MiB). 256 KiB: an incremental stores whole
   * chunks around each changed range, so smaller chunks store less per change (a scattered 1 MiB
   * change costs 1.25 MiB instead of 2 MiB with 1 MiB chunks) at a small cost per chunk.
   */
  chunkSize: z.number().int().min(65536).max(67108864).default(262144),
  /**
   * How a new repository names its chunks: BLAKE3 (3-4x faster than SHA-256; the default where the
   * native library is built, which carries it) or SHA-256 (where policy asks for it, or for a
   * repository that Stillpoint before format version 3 must read). Keyed with the repository's
   * id key when encrypted. Fixed at creation; an existing repository keeps its own.
   */
  chunkHash: z.enum(['blake3', 'sha256']).optional(),
  /**
   * zstd level: 1 by default (fast; measured on the file data of a VM disk: 7% larger than level 3, 1.6x faster).
   * Level 1 is tuned for disk images (7-byte minimum matches, a 2^13 hash table: codec.ts).
   */
  compression: z.object({ level: z.number().int().min(-7).max(22).default(1) }).default({ level: 1 }),
  /** Encryption: the passphrase comes from an environment variable or a file, never from the config. */
  encryption: z
    .object({ passphraseEnv: z.string().optional(), passphraseFile: z.string().optional() })
    .optional(),
});

export type RepositoryConfig = z.output<typeof repositoryConfigSchema>;
