import type { Inventory, VmFacts } from './vm.ts';

/**
 * What a checkpoint request asks for.
 * - `production`: application-consistent; the driver quiesces the guest itself when
 *   `HypervisorDriver.quiescesOnCheckpoint` is true (Hyper-V: VMMS calls VSS / the VSS daemon).
 * - `standard`: crash-consistent, no quiescing by the driver.
 */
export interface CheckpointRequest {
  /** Name to give the checkpoint; Stillpoint's names start with `stillpoint-` so orphans are recognisable. */
  name: string;
  kind: 'production' | 'standard';
  /** With kind `production`: fail rather than fall back to a standard checkpoint (policy `require`). */
  productionOnly: boolean;
  /** Job id owning the checkpoint (recorded for reconcile). */
  jobId: string;
}

export interface CheckpointDisk {
  /** `VirtualDisk.id` */
  diskId: string;
  /** The new differencing disk that takes the guest's writes from now on. */
  avhdx: string;
  /** The frozen chain the backup reads, top first (the previous top of the chain down to the base disk). */
  chain: string[];
  volume: string;
  virtualSize: number;
}

export interface CheckpointRef {
  id: string;
  name: string;
  vmId: string;
  vmName: string;
  /** Driver instance name. */
  driver: string;
  createdAt: string;
}

export interface Checkpoint extends CheckpointRef {
  /** What the checkpoint achieved: `application` when the guest was quiesced, else `crash`. */
  consistency: 'application' | 'crash';
  /** Why, when it differs from what was asked (e.g. Hyper-V fell back to a standard checkpoint). */
  consistencyReason?: string;
  disks: CheckpointDisk[];
}

export interface ByteRange {
  offset: number;
  length: number;
}

/** A point from which changes can be tracked (Hyper-V RCT reference point, lab change log). */
export interface ReferencePoint {
  id: string;
  vmId: string;
  /** Per disk: an opaque driver-specific token (e.g. the RCT id string). */
  disks: Record<string, string>;
}

/**
 * A hypervisor driver. Implemented by the lab simulator and the Hyper-V driver; both pass
 * the shared contract suite in `core/testing/driver-contract.ts`.
 */
export interface HypervisorDriver {
  /** Instance name (from the config's `drivers[].name`). */
  readonly name: string;
  /** True when a production checkpoint quiesces the guest by itself (Hyper-V and the lab). */
  readonly quiescesOnCheckpoint: boolean;
  inventory(): Promise<Inventory>;
  createCheckpoint(vm: VmFacts, request: CheckpointRequest): Promise<Checkpoint>;
  /** Merge the checkpoint back into the VM and wait until the merge has finished. Idempotent. */
  mergeCheckpoint(vm: VmFacts, checkpoint: CheckpointRef): Promise<void>;
  /** Checkpoints that Stillpoint created (recognisable by name), for the journal's reconcile. */
  listCheckpoints(): Promise<CheckpointRef[]>;
  /** Turn a checkpoint into a reference point for change tracking, when the driver tracks changes. */
  createReferencePoint?(vm: VmFacts, checkpoint: Checkpoint): Promise<ReferencePoint>;
  /** Changed ranges of one disk since a reference point; `null` when tracking was reset or is unknown. */
  changedRanges?(vm: VmFacts, diskId: string, since: ReferencePoint): Promise<ByteRange[] | null>;
  removeReferencePoint?(vm: VmFacts, point: ReferencePoint): Promise<void>;
  close?(): Promise<void>;
}
