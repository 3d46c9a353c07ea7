import type { ByteRange } from '../contracts/driver.ts';
import type { OpenDisk } from '../contracts/reader.ts';

/**
 * The part of the repository (core/repository) the pipeline writes through. The repository's
 * `Repository` satisfies it; declaring it here keeps the pipeline free of the repository's internals.
 */
export interface RestorePointMeta {
  job: string;
  vm: { id: string; name: string; driver: string; configuration?: Record<string, unknown> };
  consistency: { method: 'online' | 'crash-consistent' | 'offline'; level: 'application' | 'crash'; reason: string };
  time: string;
}

export interface StoreDiskResult {
  bytesRead: number;
  bytesStored: number;
  /** Bytes read whose chunk was unchanged at its place since the previous restore point. */
  bytesUnchanged?: number;
  fullRead: boolean;
  reason?: string;
}

export interface RestorePointWriter {
  storeDisk(
    disk: { id: string; virtualSize: number; logicalSectorSize: number },
    source: OpenDisk,
    opts: {
      /** Ranges changed since the base's reference point; null/absent: read every allocated extent. */
      changed?: ByteRange[] | null;
      /** Why every allocated extent is read (kept in the disk's record). */
      fullReadReason?: string;
      onProgress?: (p: { bytesRead: number; bytesStored: number }) => void;
    },
  ): Promise<StoreDiskResult>;
  /** Write the manifest, keeping `referencePoint` (the driver's change-tracking point) for the next incremental. */
  commit(extra?: { referencePoint?: unknown }): Promise<{ id: string }>;
  abort(): Promise<void>;
  /** Attach a disk stored elsewhere (an off-host proxy running the repository's `storeDiskData`). */
  addDisk?(record: unknown): Promise<void>;
  /** The previous restore point's record of a disk (the base of an incremental stored elsewhere). */
  previousDisk?(diskId: string): unknown;
  /** The VM's previous restore point (the base of an incremental), if any, with the reference point it keeps. */
  readonly previous?: { id: string; referencePoint?: unknown } | null;
}

export interface BackupRepository {
  startRestorePoint(meta: RestorePointMeta): Promise<RestorePointWriter>;
}
