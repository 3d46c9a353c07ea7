/**
 * Facts about hosts, clusters and VMs as a hypervisor driver reports them.
 * Drivers translate their hypervisor's own shapes (PowerShell JSON, lab files) into these.
 */

export type GuestOs = 'windows' | 'linux';

/** Hyper-V's VM states, by name. Only `running` and `off` allow a backup. */
export type VmState =
  | 'running'
  | 'off'
  | 'saved'
  | 'paused'
  | 'saving'
  | 'starting'
  | 'stopping'
  | 'pausing'
  | 'resuming'
  | 'critical'
  | 'other';

/** The checkpoint type configured on the VM (Hyper-V `CheckpointType`). */
export type CheckpointType = 'disabled' | 'production' | 'productionOnly' | 'standard';

export interface HostFacts {
  /** Host name as the driver addresses it. */
  name: string;
  /** Windows OS build number: 14393 = Server 2016, 17763 = 2019, 20348 = 2022, 26100 = 2025. */
  osBuild: number;
  /** Cluster this host is a node of, if any. */
  cluster?: string;
}

export interface ClusterFacts {
  name: string;
  /** Node host names. */
  nodes: string[];
  /** Cluster functional level: 8 = 2012 R2, 9 = 2016 or later (10 = 2019, 11 = 2022, 12 = 2025). */
  functionalLevel: number;
}

/** Whether the guest can be quiesced, as the host sees it. */
export interface GuestIntegration {
  /** Windows guests: the "Backup (volume shadow copy)" integration service. */
  vssRequestor?: { enabled: boolean; running: boolean };
  /** Linux guests: whether the Hyper-V VSS daemon (hv_vss_daemon) is present and answers. */
  vssDaemon?: boolean;
}

export interface VirtualDisk {
  /** Stable id of the disk within its VM (e.g. controller location "SCSI 0:1"). */
  id: string;
  /** The file the VM currently writes to: the top of its chain (a .vhdx or .avhdx). */
  path: string;
  /** The chain from `path` down to the base disk (top first), when the driver knows it. */
  chain?: string[];
  /** Name of the volume that holds the disk's files (used to group VMs for off-host backup). */
  volume: string;
  virtualSize: number;
  format: 'vhdx' | 'vhd';
}

export interface VmFacts {
  id: string;
  name: string;
  /** Host the VM runs on (owner node for a clustered VM). */
  host: string;
  /** Name of the driver instance that reported this VM (the `drivers[].name` of the config). */
  driver: string;
  clustered: boolean;
  cluster?: string;
  /** Configuration version as "major.minor", e.g. "9.0". Online backup needs 8.0 or later. */
  configurationVersion: string;
  generation: 1 | 2;
  guestOs: GuestOs;
  state: VmState;
  checkpointType: CheckpointType;
  integration: GuestIntegration;
  disks: VirtualDisk[];
  /** Driver-specific configuration kept with the restore point (serialisable). */
  configuration?: Record<string, unknown>;
}

export interface Inventory {
  hosts: HostFacts[];
  clusters: ClusterFacts[];
  vms: VmFacts[];
}
