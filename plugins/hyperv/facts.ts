import type { CheckpointType as CheckpointTypeName, ClusterFacts, GuestOs, HostFacts, VirtualDisk, VmFacts, VmState } from '../../core/contracts/vm.ts';
import {
  asArray, asObject, bool, CheckpointType, ClusterNodeState, ControllerType, date, enumName, IntegrationStatus, type Json,
  num, optNum, optStr, parseDate, shapeError, str, VhdFormat, VhdType, VMState,
} from './ps-json.ts';
import { VSS_INTEGRATION_SERVICE_ID } from './scripts.ts';

/** Parsed answers of the inventory scripts, before they become contract facts. */
export interface RawHost { name: string; caption: string; build: number }
export interface RawCluster { name: string; functionalLevel: number }
export interface RawNode { name: string; state: string; build: number; major: number; minor: number }

export interface RawVm {
  id: string; name: string; host: string; state: string; version: string; generation: number;
  clustered: boolean; checkpointType: string; path?: string; configurationLocation?: string;
  snapshotFileLocation?: string; creationTime?: string; status?: string;
}

export interface RawVhd {
  path: string; format: string; type: string; fileSize: number; size: number;
  logicalSectorSize: number; physicalSectorSize: number; blockSize: number; parentPath?: string; diskIdentifier?: string;
}

export interface RawDrive {
  vmId: string; vmName: string; host: string; driveId?: string; controllerType: string; controllerNumber: number;
  controllerLocation: number; path: string; diskNumber?: number; chain: RawVhd[];
}

export interface RawIntegration { vmId: string; vmName: string; name: string; id: string; enabled: boolean; status?: string; description?: string }

export function parseHost(value: unknown, where: string): RawHost {
  const o = asObject(asArray(value)[0], 'Win32_OperatingSystem', where);
  return { name: str(o, 'CSName', where), caption: optStr(o, 'Caption') ?? '', build: num(o, 'BuildNumber', where) };
}

export function parseCluster(value: unknown, where: string): RawCluster | undefined {
  const list = asArray(value);
  if (list.length === 0) return undefined;
  const o = asObject(list[0], 'Get-Cluster', where);
  return { name: str(o, 'Name', where), functionalLevel: num(o, 'ClusterFunctionalLevel', where) };
}

export function parseNodes(value: unknown, where: string): RawNode[] {
  return asArray(value).map((v) => {
    const o = asObject(v, 'Get-ClusterNode', where);
    const w = `${where}: cluster node ${String(o.Name)}`;
    return {
      name: str(o, 'Name', w), state: enumName(o, 'State', ClusterNodeState, w),
      build: num(o, 'BuildNumber', w), major: num(o, 'MajorVersion', w), minor: num(o, 'MinorVersion', w),
    };
  });
}

export function parseVms(value: unknown, where: string): RawVm[] {
  return asArray(value).map((v) => {
    const o = asObject(v, 'Get-VM', where);
    const w = `${where}: VM ${String(o.Name)}`;
    return {
      id: str(o, 'Id', w).toLowerCase(), name: str(o, 'Name', w), host: str(o, 'ComputerName', w),
      state: enumName(o, 'State', VMState, w), version: str(o, 'Version', w), generation: num(o, 'Generation', w),
      clustered: bool(o, 'IsClustered', w), checkpointType: enumName(o, 'CheckpointType', CheckpointType, w),
      path: optStr(o, 'Path'), configurationLocation: optStr(o, 'ConfigurationLocation'),
      snapshotFileLocation: optStr(o, 'SnapshotFileLocation'),
      creationTime: o.CreationTime === undefined || o.CreationTime === null ? undefined : date(o, 'CreationTime', w),
      status: optStr(o, 'Status'),
    };
  });
}

function parseVhd(v: unknown, where: string): RawVhd {
  const o = asObject(v, 'Get-VHD', where);
  const w = `${where}: ${String(o.Path)}`;
  return {
    path: str(o, 'Path', w), format: enumName(o, 'VhdFormat', VhdFormat, w), type: enumName(o, 'VhdType', VhdType, w),
    fileSize: num(o, 'FileSize', w), size: num(o, 'Size', w), logicalSectorSize: num(o, 'LogicalSectorSize', w),
    physicalSectorSize: num(o, 'PhysicalSectorSize', w), blockSize: num(o, 'BlockSize', w),
    parentPath: optStr(o, 'ParentPath'), diskIdentifier: optStr(o, 'DiskIdentifier'),
  };
}

export function parseDrives(value: unknown, where: string): RawDrive[] {
  return asArray(value).map((v) => {
    const o = asObject(v, 'Get-VMHardDiskDrive', where);
    const w = `${where}: VM ${String(o.VMName)} drive ${String(o.Path)}`;
    return {
      vmId: str(o, 'VMId', w).toLowerCase(), vmName: str(o, 'VMName', w), host: str(o, 'ComputerName', w),
      driveId: optStr(o, 'Id'), controllerType: enumName(o, 'ControllerType', ControllerType, w),
      controllerNumber: num(o, 'ControllerNumber', w), controllerLocation: num(o, 'ControllerLocation', w),
      path: str(o, 'Path', w), diskNumber: optNum(o, 'DiskNumber'),
      chain: asArray(o.Chain).map((c) => parseVhd(c, w)),
    };
  });
}

export function parseIntegrationServices(value: unknown, where: string): RawIntegration[] {
  return asArray(value).map((v) => {
    const o = asObject(v, 'Get-VMIntegrationService', where);
    const w = `${where}: VM ${String(o.VMName)} integration service ${String(o.Name)}`;
    const status = o.PrimaryOperationalStatus === null || o.PrimaryOperationalStatus === undefined
      ? undefined : enumName(o, 'PrimaryOperationalStatus', IntegrationStatus, w);
    return {
      vmId: str(o, 'VMId', w).toLowerCase(), vmName: str(o, 'VMName', w), name: str(o, 'Name', w), id: str(o, 'Id', w),
      enabled: bool(o, 'Enabled', w), status, description: optStr(o, 'PrimaryStatusDescription'),
    };
  });
}

/** Guest OS per VM id from the KVP intrinsic items (OSName / OSPlatformId) the guest reports. */
export function parseKvp(value: unknown, where: string): Map<string, { osName?: string; platformId?: number }> {
  const out = new Map<string, { osName?: string; platformId?: number }>();
  for (const v of asArray(value)) {
    const o = asObject(v, 'Msvm_KvpExchangeComponent', where);
    const id = str(o, 'SystemName', where).toLowerCase();
    const items: Record<string, string> = {};
    for (const xml of asArray(o.GuestIntrinsicExchangeItems)) {
      if (typeof xml !== 'string') continue;
      const name = /<PROPERTY NAME="Name" TYPE="string"><VALUE>([^<]*)<\/VALUE>/.exec(xml)?.[1];
      const data = /<PROPERTY NAME="Data" TYPE="string"><VALUE>([^<]*)<\/VALUE>/.exec(xml)?.[1];
      if (name !== undefined && data !== undefined) items[name] = decodeXml(data);
    }
    out.set(id, { osName: items.OSName, platformId: items.OSPlatformId ? Number(items.OSPlatformId) : undefined });
  }
  return out;
}

function decodeXml(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
}

// ---- to contract facts ----------------------------------------------------------------------------

const STATE: Record<string, VmState> = {
  Running: 'running', Off: 'off', Saved: 'saved', Paused: 'paused', Saving: 'saving', Starting: 'starting',
  Stopping: 'stopping', Pausing: 'pausing', Resuming: 'resuming', FastSaved: 'saved', FastSaving: 'saving', Hibernated: 'saved',
};

export function vmState(name: string): VmState {
  if (name.endsWith('Critical')) return 'critical';
  return STATE[name] ?? 'other';
}

const CHECKPOINT_TYPE: Record<string, CheckpointTypeName> = {
  Disabled: 'disabled', Production: 'production', ProductionOnly: 'productionOnly', Standard: 'standard',
};

/**
 * The volume holding a file, for grouping VMs for off-host backup: a Cluster Shared Volume
 * (`C:\ClusterStorage\Volume1`), an SMB share (`\\server\share`) or a drive (`D:\`).
 */
export function volumeOf(path: string): string {
  const csv = /^([A-Za-z]:\\ClusterStorage\\[^\\]+)/i.exec(path);
  if (csv) return csv[1];
  const unc = /^(\\\\[^\\]+\\[^\\]+)/.exec(path);
  if (unc) return unc[1];
  const drive = /^([A-Za-z]:)\\/.exec(path);
  if (drive) return `${drive[1].toUpperCase()}\\`;
  return path;
}

export function diskId(d: Pick<RawDrive, 'controllerType' | 'controllerNumber' | 'controllerLocation'>): string {
  return `${d.controllerType} ${d.controllerNumber}:${d.controllerLocation}`;
}

export function virtualDisk(d: RawDrive, where: string): VirtualDisk {
  const top = d.chain[0];
  if (!top) throw shapeError('disk chain', where, `Get-VHD returned nothing for ${d.path}`);
  return {
    id: diskId(d),
    path: d.path,
    chain: d.chain.map((c) => c.path),
    volume: volumeOf(d.path),
    virtualSize: top.size,
    format: top.format === 'VHD' ? 'vhd' : 'vhdx',
  };
}

export interface FactsInput {
  driver: string;
  cluster?: RawCluster;
  vms: RawVm[];
  drives: RawDrive[];
  integration: RawIntegration[];
  kvp: Map<string, { osName?: string; platformId?: number }>;
  guestOs: Record<string, GuestOs>;
}

/** Guest OS: the option, else what the guest reports through KVP, else Windows (reported as assumed). */
export function guestOsOf(vm: RawVm, input: FactsInput): { os: GuestOs; source: string } {
  const configured = input.guestOs[vm.name] ?? input.guestOs[vm.id];
  if (configured) return { os: configured, source: 'option guestOs' };
  const kvp = input.kvp.get(vm.id);
  if (kvp?.osName) return { os: /windows/i.test(kvp.osName) ? 'windows' : 'linux', source: `KVP OSName "${kvp.osName}"` };
  if (kvp?.platformId !== undefined) return { os: kvp.platformId === 2 ? 'windows' : 'linux', source: `KVP OSPlatformId ${kvp.platformId}` };
  return { os: 'windows', source: 'assumed (the guest reports no OS through KVP; set the driver option guestOs)' };
}

export function toVmFacts(vm: RawVm, input: FactsInput): VmFacts {
  const where = `hyperv "${input.driver}" VM ${vm.name} (${vm.id}) on ${vm.host}`;
  const drives = input.drives.filter((d) => d.vmId === vm.id);
  const passthrough = drives.filter((d) => d.diskNumber !== undefined);
  const disks = drives.filter((d) => d.diskNumber === undefined).map((d) => virtualDisk(d, where));
  const vss = input.integration.find((s) => s.vmId === vm.id && s.id.toUpperCase().endsWith(`\\${VSS_INTEGRATION_SERVICE_ID}`));
  const guest = guestOsOf(vm, input);
  const answering = vss?.status === 'Ok';
  const integration = guest.os === 'windows'
    ? { vssRequestor: { enabled: vss?.enabled ?? false, running: Boolean(vss?.enabled && answering) } }
    : { vssDaemon: Boolean(vss?.enabled && answering) };
  const version = /^\d+\.\d+$/.test(vm.version) ? vm.version : vm.version.replace(/^(\d+)$/, '$1.0');
  return {
    id: vm.id,
    name: vm.name,
    host: vm.host,
    driver: input.driver,
    clustered: vm.clustered,
    ...(vm.clustered && input.cluster ? { cluster: input.cluster.name } : {}),
    configurationVersion: version,
    generation: vm.generation === 1 ? 1 : 2,
    guestOs: guest.os,
    state: vmState(vm.state),
    checkpointType: CHECKPOINT_TYPE[vm.checkpointType] ?? 'production',
    integration,
    disks,
    configuration: {
      hypervState: vm.state,
      path: vm.path,
      configurationLocation: vm.configurationLocation,
      snapshotFileLocation: vm.snapshotFileLocation,
      creationTime: vm.creationTime,
      status: vm.status,
      guestOsSource: guest.source,
      vssIntegrationService: vss ? { name: vss.name, enabled: vss.enabled, status: vss.status ?? null, description: vss.description ?? null } : null,
      passthroughDisks: passthrough.map((d) => ({ id: diskId(d), path: d.path, diskNumber: d.diskNumber })),
      chains: Object.fromEntries(drives.filter((d) => d.diskNumber === undefined).map((d) => [diskId(d), d.chain.map((c) => ({
        path: c.path, type: c.type, format: c.format, size: c.size, fileSize: c.fileSize,
        logicalSectorSize: c.logicalSectorSize, physicalSectorSize: c.physicalSectorSize, blockSize: c.blockSize,
      }))])),
    },
  };
}

export function toHostFacts(host: RawHost | undefined, cluster: RawCluster | undefined, nodes: RawNode[]): HostFacts[] {
  if (cluster && nodes.length > 0) return nodes.map((n) => ({ name: n.name, osBuild: n.build, cluster: cluster.name }));
  return host ? [{ name: host.name, osBuild: host.build }] : [];
}

export function toClusterFacts(cluster: RawCluster | undefined, nodes: RawNode[]): ClusterFacts[] {
  return cluster ? [{ name: cluster.name, nodes: nodes.map((n) => n.name), functionalLevel: cluster.functionalLevel }] : [];
}

export { parseDate };
