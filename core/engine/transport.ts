import type { ByteRange } from '../contracts/driver.ts';
import type { DiskReader, OpenDisk } from '../contracts/reader.ts';
import type { VolumeRef } from '../contracts/snapshot.ts';
import { StillpointError } from '../errors.ts';
import type { DiskProgress, DiskResult, GroupRun, JobContext, PresentedDisk, VmRun } from './types.ts';

/** What `resolveTransport` is asked for. */
export interface TransportRequest {
  mode: 'onHost' | 'offHost';
  job: JobContext;
  /** The job's proxy (off-host), from the config. */
  proxy?: string;
}

/**
 * Where a transport puts what it reads. The engine implements it: `storeDisk` writes into the VM's
 * restore point (through the repository), fires `diskRead`/`diskProgress`/`diskStored`, and applies the
 * per-repository concurrency limit.
 */
export interface TransportSink {
  /** Tell the engine which disks are now readable (fires `disksPresented`). Call once per VM, before storing. */
  presented(disks: PresentedDisk[]): Promise<void>;
  /** Read `source` (the open chain of `disk`) and store it into the VM's restore point. */
  storeDisk(disk: PresentedDisk, source: OpenDisk): Promise<DiskResult>;
  /**
   * Present when another process (an off-host proxy) can store the disks itself: what it needs to
   * reach the repository, and how to attach what it stored. Absent: use `storeDisk`.
   */
  remote?: RemoteStoreSink;
}

/** How another process opens the repository: the config's `repository` section and its passphrase. */
export interface RepositoryAccess {
  config: Record<string, unknown>;
  passphrase?: string;
}

/** The part of a sink for disks stored by another process (with the repository's `storeDiskData`). */
export interface RemoteStoreSink {
  repository: RepositoryAccess;
  /** The VM's previous restore point (the base of an incremental): its id and, per disk id, its disk record. */
  previous: { id: string | null; disks: Record<string, unknown> };
  /**
   * Per disk id: the ranges changed since the previous restore point's reference point, or `null` and
   * why every allocated extent must be read. Hand both to the store (`storeDiskData`'s `changed` and
   * `fullReadReason`). A disk missing here is read whole.
   */
  changes?: Record<string, { changed: ByteRange[] | null; reason?: string }>;
  /** Reading of `disk` starts elsewhere (fires `diskRead`). */
  reading(disk: PresentedDisk): Promise<void>;
  /** Progress of a disk stored elsewhere (fires `diskProgress`). */
  progress(progress: DiskProgress): void;
  /** Attach a disk record stored elsewhere to the VM's restore point (fires `diskStored`). */
  addDisk(disk: PresentedDisk, stored: { record: unknown; durationMs: number }): Promise<DiskResult>;
}

/** A transport's work on one group (one VM for on-host, one volume snapshot for off-host). */
export interface TransportSession {
  /** Present one VM's frozen disks, read them and store them through `sink`. */
  transfer(vm: VmRun, sink: TransportSink): Promise<DiskResult[]>;
  /** Undo whatever `openGroup` presented. Called once every VM of the group is done (or failed). */
  close(): Promise<void>;
}

/**
 * A transport: makes a checkpoint's base disks readable for a reader and moves them to the store.
 *
 * - `grouping: 'vm'` (on-host): each VM is a group of its own; no volume snapshot.
 * - `grouping: 'volume'` (off-host): the engine groups VMs by the volume that holds their disks, creates
 *   ONE volume snapshot per group (journaled; through `resolveSnapshotProvider`) after every VM of the
 *   group has its checkpoint, calls `openGroup` (present the snapshot to the proxy), then `transfer` per
 *   VM, then `close`, and deletes the snapshot when the group's last VM is done or failed.
 *
 * The off-host transport (issue 7) may run present+read+store in a proxy process; the engine's
 * guarantees (thaw, merge, snapshot deletion, journal) stay in the engine either way.
 */
export interface Transport {
  readonly name: string;
  readonly grouping: 'vm' | 'volume';
  /** Proxy name for the per-proxy concurrency limit (off-host). */
  readonly proxy?: string;
  /** True when the transport applies per-proxy limits itself (it picks among several proxies); the engine then skips `limits.perProxy`. */
  readonly limitsProxies?: boolean;
  /**
   * Why this transport cannot read `volume` (e.g. no proxy sees it), or undefined when it can.
   * Mode `auto` uses it to choose between off-host and on-host per volume (and says why).
   */
  whyNot?(volume: VolumeRef): string | undefined;
  openGroup(group: GroupRun): Promise<TransportSession>;
}

/** The disks to read for a VM: the checkpoint's frozen chains, or (VM off) its current chains. */
export function disksToRead(run: VmRun): PresentedDisk[] {
  if (run.checkpoint) {
    return run.checkpoint.disks.map((d) => {
      if (d.chain.length === 0) {
        throw new StillpointError('the checkpoint reports an empty chain for this disk', {
          where: `VM ${run.vm.name}, disk ${d.diskId}`, hint: `driver "${run.driver.name}" must list the frozen chain (top first, down to the base disk)`,
        });
      }
      return { diskId: d.diskId, path: d.chain[0], parentPaths: d.chain.slice(1), virtualSize: d.virtualSize };
    });
  }
  return run.vm.disks.map((d) => {
    const chain = d.chain && d.chain.length > 0 ? d.chain : [d.path];
    return { diskId: d.id, path: chain[0], parentPaths: chain.slice(1), virtualSize: d.virtualSize };
  });
}

/** The built-in on-host transport: the disks are read where they are, on the host. */
export class OnHostTransport implements Transport {
  readonly name = 'on-host';
  readonly grouping = 'vm' as const;
  constructor(private readonly resolveReader: (path: string) => DiskReader) {}

  async openGroup(_group: GroupRun): Promise<TransportSession> {
    return {
      transfer: async (run, sink) => {
        const disks = disksToRead(run);
        await sink.presented(disks);
        const results: DiskResult[] = [];
        for (const disk of disks) {
          const reader = this.resolveReader(disk.path);
          const source = await reader.open(disk.path, disk.parentPaths.length > 0 ? { parentPaths: disk.parentPaths } : undefined);
          try {
            results.push(await sink.storeDisk(disk, source));
          } finally {
            await source.close();
          }
        }
        return results;
      },
      close: async () => {},
    };
  }
}
