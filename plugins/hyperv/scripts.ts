/**
 * Every PowerShell script the Hyper-V driver sends, built from its parameters only (quoted with
 * psString/wqlString), so that each one can be checked line for line against a recorded fixture.
 * Scripts emit objects; the runner serialises them (see runner.ts `wrapScript`). Enum-valued
 * properties are left as enums (5.1 writes numbers, 7 names); GUIDs are cast to strings.
 */
import { psList, psString, wqlString } from './runner.ts';
import { NAMESPACE } from './wmi.ts';

/** The Backup (volume shadow copy) integration service, by its well-known Id (not its localized name). */
export const VSS_INTEGRATION_SERVICE_ID = '5CED1297-4598-4915-A5FC-AD21BB4D02A4';

const SERIALIZE_SETTINGS = [
  '$serializer = [Microsoft.Management.Infrastructure.Serialization.CimSerializer]::Create()',
  '$embedded = [System.Text.Encoding]::Unicode.GetString($serializer.Serialize($settings, [Microsoft.Management.Infrastructure.Serialization.InstanceSerializationOptions]::None))',
];

const METHOD_RESULT = '[pscustomobject]@{ ReturnValue = $result.ReturnValue; JobId = $(if ($result.Job) { $result.Job.InstanceID } else { $null }) }';

const SNAPSHOT_FIELDS = "@{ n = 'Id'; e = { [string]$_.Id } }, Name, @{ n = 'VMId'; e = { [string]$_.VMId } }, VMName, ComputerName, SnapshotType, State, CreationTime, @{ n = 'ParentSnapshotId'; e = { [string]$_.ParentSnapshotId } }";

function cim(className: string, host: string, filter?: string): string {
  return `Get-CimInstance -Namespace ${NAMESPACE} -ClassName ${className} -ComputerName ${psString(host)}${filter ? ` -Filter ${psString(filter)}` : ''}`;
}

/** Which VMs a script works on: all VMs of some hosts, or one VM by id. */
export type VmSelector = { hosts: string[] } | { id: string; host: string };

function getVm(sel: VmSelector): string {
  return 'id' in sel
    ? `Get-VM -Id ${psString(sel.id)} -ComputerName ${psString(sel.host)}`
    : `Get-VM -ComputerName ${psList(sel.hosts)}`;
}

// ---- facts ------------------------------------------------------------------------------------

export function localHostScript(): string {
  return [
    'Get-CimInstance -ClassName Win32_OperatingSystem |',
    '  Select-Object CSName, Caption, Version, BuildNumber',
  ].join('\n');
}

export function clusterScript(): string {
  return [
    '$clusterService = Get-Service -Name ClusSvc -ErrorAction SilentlyContinue',
    "if ($clusterService -and $clusterService.Status -eq 'Running') {",
    '  Get-Cluster | Select-Object Name, ClusterFunctionalLevel',
    '}',
  ].join('\n');
}

export function clusterNodesScript(): string {
  return [
    'Get-ClusterNode |',
    '  Select-Object Name, State, MajorVersion, MinorVersion, BuildNumber',
  ].join('\n');
}

export function vmsScript(sel: VmSelector): string {
  return [
    `${getVm(sel)} |`,
    "  Select-Object @{ n = 'Id'; e = { [string]$_.Id } }, Name, ComputerName, State, Version, Generation, IsClustered, CheckpointType, Path, ConfigurationLocation, SnapshotFileLocation, CreationTime, Status",
  ].join('\n');
}

/** Every hard disk drive with the chain under its current file (Get-VHD down the ParentPath links). */
export function drivesScript(sel: VmSelector): string {
  return [
    `${getVm(sel)} | Get-VMHardDiskDrive | ForEach-Object {`,
    '  $drive = $_',
    '  $chain = @()',
    '  $path = $drive.Path',
    '  if ($null -eq $drive.DiskNumber) {',
    '    while ($path) {',
    '      $vhd = Get-VHD -Path $path -ComputerName $drive.ComputerName',
    '      $chain += $vhd | Select-Object Path, VhdFormat, VhdType, FileSize, Size, LogicalSectorSize, PhysicalSectorSize, BlockSize, ParentPath, DiskIdentifier',
    '      $path = $vhd.ParentPath',
    '    }',
    '  }',
    '  [pscustomobject]@{',
    '    VMId = [string]$drive.VMId',
    '    VMName = $drive.VMName',
    '    ComputerName = $drive.ComputerName',
    '    Id = $drive.Id',
    '    ControllerType = $drive.ControllerType',
    '    ControllerNumber = $drive.ControllerNumber',
    '    ControllerLocation = $drive.ControllerLocation',
    '    Path = $drive.Path',
    '    DiskNumber = $drive.DiskNumber',
    '    Chain = $chain',
    '  }',
    '}',
  ].join('\n');
}

export function integrationServicesScript(sel: VmSelector): string {
  return [
    `${getVm(sel)} | Get-VMIntegrationService |`,
    "  Select-Object @{ n = 'VMId'; e = { [string]$_.VMId } }, VMName, Name, Id, Enabled, PrimaryOperationalStatus, PrimaryStatusDescription",
  ].join('\n');
}

export function kvpScript(hosts: string[]): string {
  return [
    `Get-CimInstance -Namespace ${NAMESPACE} -ClassName Msvm_KvpExchangeComponent -ComputerName ${psList(hosts)} |`,
    '  Select-Object SystemName, GuestIntrinsicExchangeItems',
  ].join('\n');
}

// ---- checkpoints --------------------------------------------------------------------------------

/** Start a recovery (backup) checkpoint: Msvm_VirtualSystemSnapshotService.CreateSnapshot, type 32768. */
export function createRecoveryCheckpointScript(vmId: string, host: string, consistencyLevel: 1 | 2): string {
  return [
    `$vm = ${cim('Msvm_ComputerSystem', host, `Name=${wqlString(vmId)}`)}`,
    `if (-not $vm) { throw [System.Management.Automation.ItemNotFoundException]::new(${psString(`Hyper-V was unable to find a virtual machine with ID ${vmId}.`)}) }`,
    `$service = ${cim('Msvm_VirtualSystemSnapshotService', host)}`,
    `$settings = Get-CimClass -Namespace ${NAMESPACE} -ClassName Msvm_VirtualSystemSnapshotSettingData -ComputerName ${psString(host)} |`,
    `  New-CimInstance -ClientOnly -Property @{ ConsistencyLevel = [byte]${consistencyLevel}; IgnoreNonSnapshottableDisks = $true }`,
    ...SERIALIZE_SETTINGS,
    '$result = Invoke-CimMethod -InputObject $service -MethodName CreateSnapshot -Arguments @{ AffectedSystem = $vm; SnapshotSettings = $embedded; SnapshotType = [uint16]32768 }',
    '[pscustomobject]@{ ReturnValue = $result.ReturnValue; JobId = $(if ($result.Job) { $result.Job.InstanceID } else { $null }); SnapshotInstanceId = $(if ($result.ResultingSnapshot) { $result.ResultingSnapshot.InstanceID } else { $null }) }',
  ].join('\n');
}

/** The checkpoint a finished job created (or a known snapshot), renamed to Stillpoint's name. */
export function nameCheckpointScript(host: string, source: { jobId: string } | { snapshotInstanceId: string }, name: string): string {
  const find = 'jobId' in source
    ? [
      `$snapshot = ${cim('Msvm_ConcreteJob', host, `InstanceID=${wqlString(source.jobId)}`)} |`,
      '  Get-CimAssociatedInstance -ResultClassName Msvm_VirtualSystemSettingData',
    ]
    : [`$snapshot = ${cim('Msvm_VirtualSystemSettingData', host, `InstanceID=${wqlString(source.snapshotInstanceId)}`)}`];
  return [
    ...find,
    "$snapshotId = $snapshot.InstanceID -replace '^Microsoft:', ''",
    `Get-VMSnapshot -Id $snapshotId -ComputerName ${psString(host)} | Rename-VMSnapshot -NewName ${psString(name)} -Passthru |`,
    `  Select-Object ${SNAPSHOT_FIELDS}`,
  ].join('\n');
}

/** A production (or standard) checkpoint through Checkpoint-VM, with the VM's CheckpointType set for it and put back. */
export function checkpointVmScript(vmId: string, host: string, type: 'ProductionOnly' | 'Production' | 'Standard', name: string): string {
  return [
    `$vm = Get-VM -Id ${psString(vmId)} -ComputerName ${psString(host)}`,
    '$previousType = $vm.CheckpointType',
    `Set-VM -VM $vm -CheckpointType ${type}`,
    'try {',
    `  $snapshot = Checkpoint-VM -VM $vm -SnapshotName ${psString(name)} -Passthru`,
    '} finally {',
    '  Set-VM -VM $vm -CheckpointType $previousType',
    '}',
    `$snapshot | Select-Object ${SNAPSHOT_FIELDS}`,
  ].join('\n');
}

/** Stillpoint's checkpoints on the hosts, and every AVHDX a VM writes to (to find AVHDX whose checkpoint is gone). */
export function listCheckpointsScript(hosts: string[], prefix: string): string {
  return [
    `$vms = @(Get-VM -ComputerName ${psList(hosts)})`,
    '[pscustomobject]@{',
    `  Checkpoints = @($vms | Get-VMSnapshot | Where-Object { $_.Name -like ${psString(`${prefix}*`)} } |`,
    `    Select-Object ${SNAPSHOT_FIELDS})`,
    "  AllCheckpointIds = @($vms | Get-VMSnapshot | ForEach-Object { [string]$_.Id })",
    "  Avhdx = @($vms | Get-VMHardDiskDrive | Where-Object { $_.Path -like '*.avhdx' } |",
    "    Select-Object @{ n = 'VMId'; e = { [string]$_.VMId } }, VMName, ComputerName, Path)",
    '}',
  ].join('\n');
}

// ---- merge ----------------------------------------------------------------------------------------

function mergeSettingFilter(vmId: string): string {
  return `InstanceID LIKE ${wqlString(`Microsoft:${vmId}%`)}`;
}

/** Remove the checkpoint (Hyper-V merges its AVHDX into the parent); report which AVHDX it leaves to merge. */
export function removeCheckpointScript(vmId: string, host: string, checkpointId: string): string {
  return [
    `$vm = Get-VM -Id ${psString(vmId)} -ComputerName ${psString(host)}`,
    `$snapshot = Get-VMSnapshot -Id ${psString(checkpointId)} -ComputerName ${psString(host)} -ErrorAction SilentlyContinue`,
    '$avhdx = @()',
    'if ($snapshot) {',
    '  $parents = @($snapshot | Get-VMHardDiskDrive | ForEach-Object { $_.Path })',
    "  $avhdx = @($vm | Get-VMHardDiskDrive | Where-Object { $_.Path -like '*.avhdx' } | ForEach-Object { Get-VHD -Path $_.Path -ComputerName $_.ComputerName } |",
    '    Where-Object { $parents -contains $_.ParentPath } | ForEach-Object { $_.Path })',
    '  Remove-VMSnapshot -VMSnapshot $snapshot -Confirm:$false',
    '}',
    `$merge = ${cim('Msvm_DiskMergeSettingData', host, mergeSettingFilter(vmId))}`,
    '[pscustomobject]@{ Removed = [bool]$snapshot; Avhdx = $avhdx; MergeEnabledState = $merge.EnabledState }',
  ].join('\n');
}

/** Where the merge is: the VM's operational status, the files its drives use, whether merging is enabled. */
export function mergeStatusScript(vmId: string, host: string): string {
  return [
    `$vm = Get-VM -Id ${psString(vmId)} -ComputerName ${psString(host)}`,
    `$merge = ${cim('Msvm_DiskMergeSettingData', host, mergeSettingFilter(vmId))}`,
    '[pscustomobject]@{',
    '  OperationalStatus = @($vm.OperationalStatus)',
    '  Status = $vm.Status',
    '  DrivePaths = @($vm | Get-VMHardDiskDrive | ForEach-Object { $_.Path })',
    '  MergeEnabledState = $merge.EnabledState',
    '}',
  ].join('\n');
}

/** Re-enable disk merging (Msvm_DiskMergeSettingData.EnabledState = 1) after an export left it disabled. */
export function enableDiskMergeScript(vmId: string, host: string): string {
  return [
    `$settings = ${cim('Msvm_DiskMergeSettingData', host, mergeSettingFilter(vmId))}`,
    '$settings.EnabledState = [uint32]1',
    `$service = ${cim('Msvm_VirtualSystemManagementService', host)}`,
    ...SERIALIZE_SETTINGS,
    '$result = Invoke-CimMethod -InputObject $service -MethodName ModifyDiskMergeSettings -Arguments @{ SettingData = $embedded }',
    METHOD_RESULT,
  ].join('\n');
}

// ---- RCT reference points ----------------------------------------------------------------------------

export function convertToReferencePointScript(host: string, checkpointId: string): string {
  return [
    `$snapshot = ${cim('Msvm_VirtualSystemSettingData', host, `InstanceID=${wqlString(`Microsoft:${checkpointId}`)}`)}`,
    `if (-not $snapshot) { throw [System.Management.Automation.ItemNotFoundException]::new(${psString(`Hyper-V was unable to find the checkpoint ${checkpointId}.`)}) }`,
    `$service = ${cim('Msvm_VirtualSystemSnapshotService', host)}`,
    '$result = Invoke-CimMethod -InputObject $service -MethodName ConvertToReferencePoint -Arguments @{ AffectedSnapshot = $snapshot }',
    METHOD_RESULT,
  ].join('\n');
}

export function referencePointOfJobScript(vmId: string, host: string, jobId: string): string {
  return [
    `$point = ${cim('Msvm_ConcreteJob', host, `InstanceID=${wqlString(jobId)}`)} |`,
    '  Get-CimAssociatedInstance -ResultClassName Msvm_VirtualSystemReferencePoint',
    '[pscustomobject]@{',
    '  ReferencePoint = $point | Select-Object InstanceID, ReferencePointType, ConsistencyLevel, VirtualSystemIdentifier, VirtualDiskIdentifiers, ResilientChangeTrackingIdentifiers',
    `  Drives = @(Get-VM -Id ${psString(vmId)} -ComputerName ${psString(host)} | Get-VMHardDiskDrive | Select-Object Id, ControllerType, ControllerNumber, ControllerLocation, Path)`,
    '}',
  ].join('\n');
}

export function virtualDiskChangesScript(host: string, path: string, rctId: string, offset: number, length: number): string {
  return [
    `$service = ${cim('Msvm_ImageManagementService', host)}`,
    `$result = Invoke-CimMethod -InputObject $service -MethodName GetVirtualDiskChanges -Arguments @{ Path = ${psString(path)}; LimitId = ${psString(rctId)}; TargetSnapshotId = ''; ByteOffset = [uint64]${offset}; ByteLength = [uint64]${length} }`,
    '[pscustomobject]@{ ReturnValue = $result.ReturnValue; JobId = $(if ($result.Job) { $result.Job.InstanceID } else { $null }); ProcessedByteLength = $result.ProcessedByteLength; ChangedByteOffsets = @($result.ChangedByteOffsets); ChangedByteLengths = @($result.ChangedByteLengths) }',
  ].join('\n');
}

export function destroyReferencePointScript(host: string, instanceId: string): string {
  return [
    `$point = ${cim('Msvm_VirtualSystemReferencePoint', host, `InstanceID=${wqlString(instanceId)}`)}`,
    'if ($point) {',
    `  $service = ${cim('Msvm_VirtualSystemReferencePointService', host)}`,
    '  $result = Invoke-CimMethod -InputObject $service -MethodName DestroyReferencePoint -Arguments @{ AffectedReferencePoint = $point }',
    `  ${METHOD_RESULT}`,
    '} else {',
    '  [pscustomobject]@{ ReturnValue = 0; JobId = $null }',
    '}',
  ].join('\n');
}
