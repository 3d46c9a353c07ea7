import createDebug from 'debug';
import type {
  ByteRange, Checkpoint, CheckpointDisk, CheckpointRef, CheckpointRequest, HypervisorDriver, ReferencePoint,
} from '../../core/contracts/driver.ts';
import type { Inventory, VmFacts } from '../../core/contracts/vm.ts';
import { NotFoundError, StillpointError, TransientError } from '../../core/errors.ts';
import {
  parseCluster, parseDrives, parseHost, parseIntegrationServices, parseKvp, parseNodes, parseVms,
  type RawCluster, type RawDrive, type RawHost, type RawNode, toClusterFacts, toHostFacts, toVmFacts, diskId, volumeOf,
} from './facts.ts';
import type { HypervDriverOptions } from './options.ts';
import {
  asArray, asObject, date, enumName, type Json, num, optNum, optStr, SnapshotType, str, VMState,
} from './ps-json.ts';
import type { PowerShellRunner } from './runner.ts';
import * as scripts from './scripts.ts';
import {
  completeMethod, JOB_COMPLETED_WITH_WARNINGS, JobFailedError, mapPowerShellError, type PollOptions, runMapped, sleep, type WmiJob,
} from './wmi.ts';

const debug = createDebug('stillpoint:hyperv');

export const CHECKPOINT_PREFIX = 'stillpoint-';
/** Name given to the ref of an AVHDX that a VM still writes to although its checkpoint is gone. */
export const ORPHAN_AVHDX_PREFIX = 'stillpoint-orphan-avhdx:';

/** Microsoft.HyperV.PowerShell.VMOperationalStatus values that mean a merge is still going on. */
const VM_OPERATIONAL_STATUS = {
  Ok: 2, Degraded: 3, PredictiveFailure: 5, InService: 11, Dormant: 15, SupportingEntityInError: 16,
  CreatingSnapshot: 32768, ApplyingSnapshot: 23769, DeletingSnapshot: 32770, WaitingToStart: 32771,
  MergingDisks: 32772, ExportingVirtualMachine: 32773, MigratingVirtualMachine: 32774,
  BackingUpVirtualMachine: 32776, ModifyingUpVirtualMachine: 32777, StorageMigrationPhaseOne: 32778,
  StorageMigrationPhaseTwo: 32779, MigratingPlannedVm: 32780, CheckingCompatibility: 32781,
  ApplicationCriticalState: 32782, CommunicationTimedOut: 32783, CommunicationFailed: 32784,
  NoIommu: 32785, NoIovSupportInNic: 32786, SwitchNotInIovMode: 32787, IovBlockedByPolicy: 32788,
  IovNoAvailResources: 32789, IovGuestDriversNeeded: 32790, CriticalIoError: 32795,
} as const;
const MERGING = new Set(['MergingDisks', 'DeletingSnapshot']);

interface Discovery { host: RawHost; cluster?: RawCluster; nodes: RawNode[]; hosts: string[] }

interface RawSnapshot { id: string; name: string; vmId: string; vmName: string; host: string; type: string; state: string; createdAt: string }

function parseSnapshot(value: unknown, where: string): RawSnapshot {
  const o = asObject(asArray(value)[0], 'Get-VMSnapshot', where);
  return {
    id: str(o, 'Id', where).toLowerCase(), name: str(o, 'Name', where), vmId: str(o, 'VMId', where).toLowerCase(),
    vmName: str(o, 'VMName', where), host: str(o, 'ComputerName', where),
    type: enumName(o, 'SnapshotType', SnapshotType, where), state: enumName(o, 'State', VMState, where),
    createdAt: date(o, 'CreationTime', where),
  };
}

export interface HypervDriverDeps {
  /** The PowerShell runner, or a function that makes it on first use. */
  runner: PowerShellRunner | (() => PowerShellRunner);
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * The Hyper-V driver: facts, checkpoints, merges and RCT through PowerShell scripts (scripts.ts)
 * sent through a `PowerShellRunner`. Hyper-V's VMMS quiesces the guest itself when it takes an
 * application-consistent checkpoint, so `quiescesOnCheckpoint` is true.
 */
export class HypervDriver implements HypervisorDriver {
  readonly name: string;
  readonly quiescesOnCheckpoint = true;
  readonly #options: HypervDriverOptions;
  readonly #deps: HypervDriverDeps;
  #runner: PowerShellRunner | undefined;
  #discovery: Discovery | undefined;

  constructor(name: string, options: HypervDriverOptions, deps: HypervDriverDeps) {
    this.name = name;
    this.#options = options;
    this.#deps = deps;
  }

  get #ps(): PowerShellRunner {
    if (!this.#runner) this.#runner = typeof this.#deps.runner === 'function' ? this.#deps.runner() : this.#deps.runner;
    return this.#runner;
  }

  #where(vm?: { name: string }): string {
    return vm ? `hyperv "${this.name}" VM ${vm.name}` : `hyperv "${this.name}"`;
  }

  #poll(timeoutMs: number): PollOptions {
    return { intervalMs: this.#options.pollIntervalMs, timeoutMs, now: this.#deps.now, sleep: this.#deps.sleep };
  }

  async #run(script: string, operation: string, where: string): Promise<unknown> {
    return runMapped(this.#ps, script, operation, where);
  }

  // ---- facts -------------------------------------------------------------------------------------

  async #discover(): Promise<Discovery> {
    const where = this.#where();
    const host = parseHost(await this.#run(scripts.localHostScript(), 'reading the host OS (Win32_OperatingSystem)', where), where);
    const cluster = parseCluster(await this.#run(scripts.clusterScript(), 'reading the cluster (Get-Cluster)', where), where);
    const nodes = cluster ? parseNodes(await this.#run(scripts.clusterNodesScript(), 'reading the cluster nodes (Get-ClusterNode)', where), where) : [];
    const hosts = this.#options.hosts ?? (cluster ? nodes.filter((n) => n.state === 'Up' || n.state === 'Paused').map((n) => n.name) : [host.name]);
    this.#discovery = { host, cluster, nodes, hosts };
    debug('discovered host %s build %d, cluster %s, managing %o', host.name, host.build, cluster?.name ?? '-', hosts);
    return this.#discovery;
  }

  async inventory(): Promise<Inventory> {
    const where = this.#where();
    const d = await this.#discover();
    const sel = { hosts: d.hosts };
    const vms = parseVms(await this.#run(scripts.vmsScript(sel), 'listing VMs (Get-VM)', where), where);
    if (vms.length === 0) return { hosts: toHostFacts(d.host, d.cluster, d.nodes), clusters: toClusterFacts(d.cluster, d.nodes), vms: [] };
    const drives = parseDrives(await this.#run(scripts.drivesScript(sel), 'listing disks (Get-VMHardDiskDrive, Get-VHD)', where), where);
    const integration = parseIntegrationServices(
      await this.#run(scripts.integrationServicesScript(sel), 'reading integration services (Get-VMIntegrationService)', where), where);
    const kvp = parseKvp(await this.#run(scripts.kvpScript(d.hosts), 'reading guest OS names (Msvm_KvpExchangeComponent)', where), where);
    const input = { driver: this.name, cluster: d.cluster, vms, drives, integration, kvp, guestOs: this.#options.guestOs };
    return {
      hosts: toHostFacts(d.host, d.cluster, d.nodes),
      clusters: toClusterFacts(d.cluster, d.nodes),
      vms: vms.map((vm) => toVmFacts(vm, input)),
    };
  }

  async #drivesOf(vm: VmFacts): Promise<RawDrive[]> {
    const where = this.#where(vm);
    return parseDrives(await this.#run(scripts.drivesScript({ id: vm.id, host: vm.host }), 'listing disks (Get-VMHardDiskDrive, Get-VHD)', where), where);
  }

  // ---- checkpoints -------------------------------------------------------------------------------

  async createCheckpoint(vm: VmFacts, request: CheckpointRequest): Promise<Checkpoint> {
    const where = this.#where(vm);
    if (!request.name.startsWith(CHECKPOINT_PREFIX)) {
      throw new StillpointError(`checkpoint name "${request.name}" does not start with "${CHECKPOINT_PREFIX}"`, {
        where, hint: 'Stillpoint recognises its checkpoints by that prefix; this is a bug in the caller',
      });
    }
    const made = this.#options.checkpointMethod === 'checkpoint-vm'
      ? await this.#checkpointVm(vm, request)
      : await this.#recoveryCheckpoint(vm, request);
    const disks = await this.#checkpointDisks(vm, made.snapshot);
    return {
      id: made.snapshot.id,
      name: made.snapshot.name,
      vmId: vm.id,
      vmName: vm.name,
      driver: this.name,
      createdAt: made.snapshot.createdAt,
      consistency: made.consistency,
      ...(made.reason ? { consistencyReason: made.reason } : {}),
      disks,
    };
  }

  async #startRecovery(vm: VmFacts, level: 1 | 2, name: string): Promise<{ snapshot: RawSnapshot; job?: WmiJob }> {
    const where = this.#where(vm);
    const what = level === 1 ? 'creating an application-consistent recovery checkpoint' : 'creating a crash-consistent recovery checkpoint';
    const started = await this.#run(scripts.createRecoveryCheckpointScript(vm.id, vm.host, level), what, where);
    const job = await completeMethod(this.#ps, vm.host, started, what, where, this.#poll(this.#options.checkpointTimeoutMs));
    const o = asObject(started, 'CreateSnapshot result', where);
    const source = job ? { jobId: job.instanceId || String(o.JobId) } : { snapshotInstanceId: str(o, 'SnapshotInstanceId', where) };
    const snapshot = parseSnapshot(await this.#run(scripts.nameCheckpointScript(vm.host, source, name), 'naming the checkpoint (Rename-VMSnapshot)', where), where);
    return { snapshot, job };
  }

  async #recoveryCheckpoint(vm: VmFacts, request: CheckpointRequest) {
    const where = this.#where(vm);
    if (request.kind === 'standard') {
      const { snapshot } = await this.#startRecovery(vm, 2, request.name);
      return { snapshot, consistency: 'crash' as const, reason: undefined };
    }
    let made: { snapshot: RawSnapshot; job?: WmiJob };
    try {
      made = await this.#startRecovery(vm, 1, request.name);
    } catch (err) {
      if (!(err instanceof JobFailedError) || err.code === 32769) throw err;
      if (request.productionOnly) {
        throw new StillpointError(`Hyper-V could not create an application-consistent checkpoint: ${err.message}`, {
          where, cause: err,
          hint: 'The consistency policy is "require", so Stillpoint does not fall back to a crash-consistent checkpoint. Check the guest\'s VSS writers (vssadmin list writers) or the Linux VSS daemon (hv_vss_daemon), or use policy "prefer"',
        });
      }
      debug('%s: application-consistent checkpoint failed (%s); falling back to crash-consistent', vm.name, err.message);
      const { snapshot } = await this.#startRecovery(vm, 2, request.name);
      return {
        snapshot, consistency: 'crash' as const,
        reason: `Hyper-V could not create an application-consistent checkpoint (${err.message}); a crash-consistent checkpoint was taken instead (policy prefer)`,
      };
    }
    if (made.job?.state === JOB_COMPLETED_WITH_WARNINGS) {
      const warning = [made.job.errorSummary, made.job.errorDescription].filter(Boolean).join(' — ') || 'completed with warnings';
      if (request.productionOnly) {
        await this.mergeCheckpoint(vm, { ...made.snapshot, vmId: vm.id, vmName: vm.name, driver: this.name, createdAt: made.snapshot.createdAt });
        throw new StillpointError(`Hyper-V did not quiesce the guest for the checkpoint: ${warning}`, {
          where, hint: 'The consistency policy is "require"; the checkpoint was removed again. Check the guest\'s VSS integration, or use policy "prefer"',
        });
      }
      return { snapshot: made.snapshot, consistency: 'crash' as const, reason: `Hyper-V completed the checkpoint with warnings and did not quiesce the guest: ${warning}` };
    }
    return { snapshot: made.snapshot, consistency: 'application' as const, reason: undefined };
  }

  async #checkpointVm(vm: VmFacts, request: CheckpointRequest) {
    const where = this.#where(vm);
    const type = request.kind === 'standard' ? 'Standard' : request.productionOnly ? 'ProductionOnly' : 'Production';
    let value: unknown;
    try {
      value = await this.#ps.run(scripts.checkpointVmScript(vm.id, vm.host, type, request.name));
    } catch (err) {
      const mapped = mapPowerShellError(err, `creating a ${type} checkpoint (Checkpoint-VM)`, where);
      if (type === 'ProductionOnly' && mapped instanceof StillpointError && !(mapped instanceof NotFoundError) && !(mapped instanceof TransientError)) {
        throw new StillpointError(mapped.message, {
          where, cause: err,
          hint: 'The consistency policy is "require" (CheckpointType ProductionOnly): Hyper-V could not quiesce the guest and Stillpoint does not fall back. Check the guest\'s VSS integration service or hv_vss_daemon, or use policy "prefer"',
        });
      }
      throw mapped;
    }
    const snapshot = parseSnapshot(value, where);
    if (request.kind === 'standard') return { snapshot, consistency: 'crash' as const, reason: undefined };
    // A production checkpoint holds no memory (State Off); a standard one of a running VM is saved (State Saved).
    if (snapshot.state === 'Saved') {
      return {
        snapshot, consistency: 'crash' as const,
        reason: 'Hyper-V could not create a production checkpoint and fell back to a standard checkpoint (CheckpointType Production)',
      };
    }
    return { snapshot, consistency: 'application' as const, reason: undefined };
  }

  async #checkpointDisks(vm: VmFacts, snapshot: RawSnapshot): Promise<CheckpointDisk[]> {
    const where = `${this.#where(vm)} checkpoint ${snapshot.name}`;
    const drives = (await this.#drivesOf(vm)).filter((d) => d.diskNumber === undefined);
    return drives.map((d) => {
      const top = d.chain[0];
      const id = diskId(d);
      if (!top || top.type !== 'Differencing' || !/\.avhdx?$/i.test(d.path) || d.chain.length < 2) {
        throw new StillpointError(`disk ${id} (${d.path}) has no AVHDX after the checkpoint`, {
          where, hint: 'Hyper-V did not redirect this disk\'s writes (a shared or pass-through disk?); such disks cannot be backed up online',
        });
      }
      return {
        diskId: id,
        avhdx: d.path,
        chain: d.chain.slice(1).map((c) => c.path),
        volume: vm.disks.find((x) => x.id === id)?.volume ?? volumeOf(d.chain[1].path),
        virtualSize: top.size,
      };
    });
  }

  // ---- merge ------------------------------------------------------------------------------------

  async mergeCheckpoint(vm: VmFacts, checkpoint: CheckpointRef): Promise<void> {
    const where = `${this.#where(vm)} checkpoint ${checkpoint.name}`;
    let avhdx: string[] = [];
    if (checkpoint.name.startsWith(ORPHAN_AVHDX_PREFIX)) {
      avhdx = [checkpoint.name.slice(ORPHAN_AVHDX_PREFIX.length)];
      await this.#ensureMergeEnabled(vm, await this.#mergeStatus(vm));
    } else {
      const o = asObject(await this.#run(scripts.removeCheckpointScript(vm.id, vm.host, checkpoint.id), 'removing the checkpoint (Remove-VMSnapshot)', where), 'Remove-VMSnapshot result', where);
      avhdx = asArray(o.Avhdx).filter((p): p is string => typeof p === 'string');
      debug('%s: removed=%s, AVHDX to merge %o, merge enabled state %s', where, o.Removed, avhdx, o.MergeEnabledState);
      if (optNum(o, 'MergeEnabledState') === 0) await this.#enableMerge(vm);
    }
    const now = this.#deps.now ?? Date.now;
    const wait = this.#deps.sleep ?? sleep;
    const deadline = now() + this.#options.mergeTimeoutMs;
    let stalled = 0;
    for (;;) {
      const status = await this.#mergeStatus(vm);
      await this.#ensureMergeEnabled(vm, status);
      const attached = avhdx.filter((p) => status.drivePaths.some((d) => d.toLowerCase() === p.toLowerCase()));
      const merging = status.operational.some((s) => MERGING.has(s));
      if (!merging && attached.length === 0) {
        debug('%s: merge finished', where);
        return;
      }
      if (!merging) {
        // Not merging but the AVHDX is still attached: Hyper-V has not started (yet); give it a few polls.
        if (++stalled >= 3 && checkpoint.name.startsWith(ORPHAN_AVHDX_PREFIX)) {
          throw new StillpointError(`the VM still writes to ${attached.join(', ')} although its checkpoint is gone, and Hyper-V does not merge it`, {
            where, hint: 'Shut the VM down (Hyper-V merges pending disks when the VM stops), or merge offline with Merge-VHD, then run stillpoint cleanup again',
          });
        }
      } else {
        stalled = 0;
      }
      if (now() >= deadline) {
        throw new TransientError(`the merge has not finished after ${this.#options.mergeTimeoutMs} ms (status: ${status.status ?? status.operational.join(', ')})`, {
          where, hint: 'Hyper-V keeps merging in the background; stillpoint cleanup waits for it again later',
        });
      }
      await wait(this.#options.pollIntervalMs);
    }
  }

  async #mergeStatus(vm: VmFacts): Promise<{ operational: string[]; status?: string; drivePaths: string[]; mergeEnabledState?: number }> {
    const where = this.#where(vm);
    const o = asObject(await this.#run(scripts.mergeStatusScript(vm.id, vm.host), 'reading the merge status (Get-VM)', where), 'merge status', where);
    const operational = asArray(o.OperationalStatus).map((v) => enumName({ s: v }, 's', VM_OPERATIONAL_STATUS, `${where}: OperationalStatus`));
    return {
      operational,
      status: optStr(o, 'Status'),
      drivePaths: asArray(o.DrivePaths).filter((p): p is string => typeof p === 'string'),
      mergeEnabledState: optNum(o, 'MergeEnabledState'),
    };
  }

  async #ensureMergeEnabled(vm: VmFacts, status: { mergeEnabledState?: number }): Promise<void> {
    if (status.mergeEnabledState === 0) await this.#enableMerge(vm);
  }

  async #enableMerge(vm: VmFacts): Promise<void> {
    const where = this.#where(vm);
    debug('%s: disk merging is disabled (EnabledState 0); enabling it', where);
    const result = await this.#run(scripts.enableDiskMergeScript(vm.id, vm.host), 'enabling disk merging (ModifyDiskMergeSettings)', where);
    await completeMethod(this.#ps, vm.host, result, 'enabling disk merging', where, this.#poll(this.#options.checkpointTimeoutMs));
  }

  // ---- orphans ----------------------------------------------------------------------------------

  async listCheckpoints(): Promise<CheckpointRef[]> {
    const where = this.#where();
    const d = this.#discovery ?? await this.#discover();
    const o = asObject(await this.#run(scripts.listCheckpointsScript(d.hosts, CHECKPOINT_PREFIX), 'listing checkpoints (Get-VMSnapshot)', where), 'checkpoint list', where);
    const refs: CheckpointRef[] = asArray(o.Checkpoints).map((c) => {
      const s = parseSnapshot(c, where);
      return { id: s.id, name: s.name, vmId: s.vmId, vmName: s.vmName, driver: this.name, createdAt: s.createdAt };
    });
    const known = new Set(asArray(o.AllCheckpointIds).map((v) => String(v).toLowerCase()));
    for (const a of asArray(o.Avhdx)) {
      const x: Json = asObject(a, 'AVHDX drive', where);
      const path = str(x, 'Path', where);
      const guid = /_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.avhdx$/i.exec(path)?.[1]?.toLowerCase();
      if (!guid || known.has(guid)) continue;
      refs.push({
        id: guid, name: `${ORPHAN_AVHDX_PREFIX}${path}`, vmId: str(x, 'VMId', where).toLowerCase(), vmName: str(x, 'VMName', where),
        driver: this.name, createdAt: '',
      });
    }
    return refs;
  }

  // ---- RCT ----------------------------------------------------------------------------------------

  async createReferencePoint(vm: VmFacts, checkpoint: Checkpoint): Promise<ReferencePoint> {
    const where = `${this.#where(vm)} checkpoint ${checkpoint.name}`;
    if (this.#options.checkpointMethod !== 'recovery') {
      throw new StillpointError('reference points need recovery checkpoints', {
        where, hint: 'Set the driver option checkpointMethod to "recovery" (the default) to use resilient change tracking',
      });
    }
    const started = await this.#run(scripts.convertToReferencePointScript(vm.host, checkpoint.id), 'converting the checkpoint to a reference point', where);
    const job = await completeMethod(this.#ps, vm.host, started, 'converting the checkpoint to a reference point', where, this.#poll(this.#options.checkpointTimeoutMs));
    if (!job) throw new StillpointError('ConvertToReferencePoint returned no job to find the reference point by', { where });
    const o = asObject(await this.#run(scripts.referencePointOfJobScript(vm.id, vm.host, job.instanceId), 'reading the reference point', where), 'reference point', where);
    const rp = asObject(o.ReferencePoint, 'Msvm_VirtualSystemReferencePoint', where);
    const diskIds = asArray(rp.VirtualDiskIdentifiers).map(String);
    const rctIds = asArray(rp.ResilientChangeTrackingIdentifiers).map(String);
    if (diskIds.length !== rctIds.length) throw new StillpointError('the reference point lists different numbers of disks and RCT ids', { where });
    const drives = asArray(o.Drives).map((v) => asObject(v, 'drive', where));
    const disks: Record<string, string> = {};
    diskIds.forEach((identifier, i) => {
      const stem = identifier.replace(/\\[^\\]*$/, '').toLowerCase();
      const drive = drives.find((dr) => String(dr.Id ?? '').replace(/\\[^\\]*$/, '').toLowerCase() === stem);
      if (!drive) throw new StillpointError(`no drive of the VM matches the reference point's disk ${identifier}`, { where });
      disks[diskId({
        controllerType: enumName(drive, 'ControllerType', { IDE: 0, SCSI: 1, PMEM: 2 }, where),
        controllerNumber: num(drive, 'ControllerNumber', where), controllerLocation: num(drive, 'ControllerLocation', where),
      })] = rctIds[i];
    });
    debug('%s: reference point %s consistency level %s', where, rp.InstanceID, rp.ConsistencyLevel);
    return { id: str(rp, 'InstanceID', where), vmId: vm.id, disks };
  }

  async changedRanges(vm: VmFacts, diskIdValue: string, since: ReferencePoint): Promise<ByteRange[] | null> {
    const where = `${this.#where(vm)} disk ${diskIdValue}`;
    const rctId = since.disks[diskIdValue];
    if (!rctId) return null;
    const disk = vm.disks.find((d) => d.id === diskIdValue);
    if (!disk) throw new NotFoundError(`VM has no disk ${diskIdValue}`, { where, hint: 'Run the inventory again; the VM\'s disks changed' });
    const ranges: ByteRange[] = [];
    let offset = 0;
    while (offset < disk.virtualSize) {
      const result = await this.#run(scripts.virtualDiskChangesScript(vm.host, disk.path, rctId, offset, disk.virtualSize - offset), 'reading changed blocks (GetVirtualDiskChanges)', where);
      const o = asObject(result, 'GetVirtualDiskChanges result', where);
      if (num(o, 'ReturnValue', where) === 32773) {
        debug('%s: RCT id %s is no longer valid (change tracking was reset)', where, rctId);
        return null;
      }
      await completeMethod(this.#ps, vm.host, result, 'reading changed blocks', where, this.#poll(this.#options.checkpointTimeoutMs));
      const offsets = asArray(o.ChangedByteOffsets).map(Number);
      const lengths = asArray(o.ChangedByteLengths).map(Number);
      offsets.forEach((off, i) => ranges.push({ offset: off, length: lengths[i] }));
      const processed = num(o, 'ProcessedByteLength', where);
      if (processed <= 0) throw new StillpointError('GetVirtualDiskChanges processed no bytes', { where });
      offset += processed;
    }
    return ranges;
  }

  async removeReferencePoint(vm: VmFacts, point: ReferencePoint): Promise<void> {
    const where = `${this.#where(vm)} reference point ${point.id}`;
    const result = await this.#run(scripts.destroyReferencePointScript(vm.host, point.id), 'removing the reference point (DestroyReferencePoint)', where);
    await completeMethod(this.#ps, vm.host, result, 'removing the reference point', where, this.#poll(this.#options.checkpointTimeoutMs));
  }

  async close(): Promise<void> {
    await this.#runner?.close?.();
  }
}

