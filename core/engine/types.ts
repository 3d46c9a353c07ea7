import type { Checkpoint, HypervisorDriver } from '../contracts/driver.ts';
import type { QuiesceOutcome } from '../contracts/quiescer.ts';
import type { VolumeRef, VolumeSnapshot } from '../contracts/snapshot.ts';
import type { Inventory, VmFacts } from '../contracts/vm.ts';

/** The job's consistency policy: `require` fails rather than falls back, `prefer` falls back and says so, `crash` never quiesces. */
export type ConsistencyPolicy = 'require' | 'prefer' | 'crash';

/** How disks travel: read where they are (`onHost`), from a volume snapshot on a proxy (`offHost`), or pick (`auto`). */
export type TransportMode = 'onHost' | 'offHost' | 'auto';

/** One condition of DESIGN.md step 1, as evaluated for one VM. */
export interface PrerequisiteCondition {
  /** Stable key: `configurationVersion`, `hostBuild`, `clusterNodes`, `clusterFunctionalLevel`, `guestQuiescable`, `state`, `checkpointType`. */
  key: string;
  /** Human label, e.g. "VM configuration version". */
  label: string;
  /** What was found, e.g. "9.0", "20348", "running". */
  value: string;
  /** What is needed, e.g. ">= 8.0". */
  required: string;
  ok: boolean;
  /** Why it is not met (or a note when it is). */
  detail?: string;
}

/** Every prerequisite condition of one VM; a waterfall hook (`prerequisites`) may add or amend conditions. */
export interface PrerequisiteReport {
  vm: VmFacts;
  conditions: PrerequisiteCondition[];
}

/**
 * The method a backup uses for one VM, and why.
 * - `online`: checkpoint with quiescing (production checkpoint, or engine freeze + standard checkpoint);
 * - `crash-consistent`: standard checkpoint, no quiescing;
 * - `offline`: the VM is off; no checkpoint, its current chain is read as it is;
 * - `skip`: the VM is in a state where no checkpoint can be taken; reported, not forced;
 * - `fail`: policy `require` and online backup is not possible (or checkpoints are disabled).
 */
export type BackupMethod = 'online' | 'crash-consistent' | 'offline' | 'skip' | 'fail';

export interface Decision {
  method: BackupMethod;
  /** Checkpoint kind to ask the driver for; `null` for offline/skip/fail. */
  checkpoint: 'production' | 'standard' | null;
  /** Who quiesces: the driver during a production checkpoint, the engine through a Quiescer, or nobody. */
  quiesce: 'driver' | 'engine' | 'none';
  /** Consistency level the method aims for. */
  level: 'application' | 'crash';
  /** One sentence a user reads: why this method. Kept with the restore point. */
  reason: string;
}

/** Everything a pipeline hook may want to know about the running job. */
export interface JobContext {
  /** Unique id of this run (`<job>-<timestamp>-<random>`); checkpoints are named `stillpoint-<runId>-...`. */
  runId: string;
  /** The job's name from the config. */
  job: string;
  policy: ConsistencyPolicy;
  mode: TransportMode;
  startedAt: string;
  inventory: Inventory;
  /** Set once a job is cancelled (SIGINT/SIGTERM): no new VM starts; running ones finish their cleanup. */
  signal: AbortSignal;
}

/** One VM on its way through the pipeline. */
export interface VmRun {
  job: JobContext;
  vm: VmFacts;
  driver: HypervisorDriver;
  report: PrerequisiteReport;
  decision: Decision;
  /** Set once the checkpoint exists. */
  checkpoint?: Checkpoint;
  /** Set once the guest has been thawed (engine quiescing). */
  quiesce?: QuiesceOutcome;
  /** Name of the transport group this VM belongs to. */
  group?: string;
}

/** A disk as the transport makes it readable: the chain to open, top first. */
export interface PresentedDisk {
  diskId: string;
  /** Top of the chain to open (in the reader's namespace: on the host or on the proxy). */
  path: string;
  /** The rest of the chain below `path`, top first (parent locator override). */
  parentPaths: string[];
  virtualSize: number;
}

export interface DiskProgress {
  diskId: string;
  bytesRead: number;
  bytesStored: number;
  /** Bytes that will be read in total when known (allocated size or virtual size). */
  totalBytes: number;
}

export interface DiskResult {
  diskId: string;
  bytesRead: number;
  bytesStored: number;
  /** Bytes read whose chunk was the same as in the previous restore point at that place (hashed, not stored again). */
  bytesUnchanged?: number;
  fullRead: boolean;
  reason?: string;
  durationMs: number;
}

export type VmOutcome = 'success' | 'failed' | 'skipped';

export interface VmResult {
  vm: { id: string; name: string; host: string; driver: string };
  method: BackupMethod;
  level: 'application' | 'crash' | null;
  reason: string;
  outcome: VmOutcome;
  /** What went wrong, when `outcome` is `failed` (also cleanup problems, e.g. a merge that failed). */
  error?: string;
  /** Problems during cleanup that did not change the outcome (reported, kept in the journal for reconcile). */
  warnings: string[];
  restorePoint?: string;
  disks: DiskResult[];
  /**
   * How the disks were read: `incremental (changed ranges)`, or `full read: <why>` (no previous restore
   * point, change tracking reset, the driver has no change tracking, the disk's size changed, ...).
   */
  readMode?: string;
  /** The reference point the restore point keeps for the next incremental (the driver's id), if any. */
  referencePoint?: string;
  bytesRead: number;
  bytesStored: number;
  durationMs: number;
}

export interface JobResult {
  runId: string;
  job: string;
  startedAt: string;
  durationMs: number;
  vms: VmResult[];
  /** `success`: every VM backed up; `partial`: some did; `failed`: none did (or the job could not start). */
  status: 'success' | 'partial' | 'failed';
  /** What the job-level reconcile (start of job) did. */
  reconciled: string[];
  error?: string;
}

/** A group of VMs read together: for off-host, the VMs whose disks sit on one volume (one volume snapshot). */
export interface GroupRun {
  job: JobContext;
  key: string;
  volume?: VolumeRef;
  snapshot?: VolumeSnapshot;
  vms: VmRun[];
}
