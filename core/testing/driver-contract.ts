/**
 * The shared hypervisor-driver contract suite. Every `HypervisorDriver` (the lab simulator, the
 * Hyper-V driver over a real or replayed PowerShell runner) runs it:
 *
 * ```ts
 * import test from 'ava';
 * import { driverContract } from 'stillpoint/testing';
 * driverContract(test, async () => ({ driver, scenario: { runningVm: 'web01', offVm: 'old01' }, teardown }));
 * ```
 *
 * The suite is scenario-driven: it names the VMs to use and makes no assumption about files it
 * cannot see (a replaying runner cannot fake file contents), so file checks run only when the
 * scenario says the driver's files are on this machine (`filesAreLocal`).
 * Each test calls `setup()` afresh and `teardown()` at its end; tests run serially.
 * Checkpoint names and job ids are fixed (see `contractNames`) so that a replay can match them.
 */
import { existsSync } from 'node:fs';
import type { ExecutionContext, TestFn } from 'ava';
import { z } from 'zod';
import type { ByteRange, Checkpoint, CheckpointRequest, HypervisorDriver } from '../contracts/driver.ts';
import type { Inventory, VmFacts } from '../contracts/vm.ts';
import { NotFoundError, StillpointError } from '../errors.ts';

export interface DriverContractScenario {
  /** Name (or id) of a running VM with at least one disk whose guest can be quiesced. */
  runningVm: string;
  /** Name (or id) of a VM that is off, when the host has one. */
  offVm?: string;
  /**
   * Name (or id) of a running VM whose guest cannot be quiesced (integration service missing or
   * stopped): a production checkpoint falls back to a standard one, or fails with `productionOnly`.
   */
  unquiescableVm?: string;
  /** True when the driver's disk files are on this machine (lab: yes; replayed Hyper-V: no). */
  filesAreLocal?: boolean;
  /** True when the driver tracks changes (createReferencePoint/changedRanges); default: when it has the methods. */
  changeTracking?: boolean;
  /**
   * Called between two checkpoints of the change-tracking test, to make the guest write. May return
   * ranges (per disk id) that the driver must then report as changed. A lab guest writes by itself.
   */
  makeChanges?(vm: VmFacts): Promise<Record<string, ByteRange[]> | void>;
  /** Fixed job id for the suite's checkpoint requests (default `contract`). */
  jobId?: string;
}

export interface DriverContractSetup {
  driver: HypervisorDriver;
  scenario: DriverContractScenario;
  teardown(): Promise<void>;
}

/** The checkpoint names the suite asks for (fixed, so a replaying runner can match them). */
export const contractNames = {
  production: 'stillpoint-contract-production',
  standard: 'stillpoint-contract-standard',
  fallback: 'stillpoint-contract-fallback',
  productionOnly: 'stillpoint-contract-production-only',
  offVm: 'stillpoint-contract-off',
  tracking1: 'stillpoint-contract-rct-1',
  tracking2: 'stillpoint-contract-rct-2',
  unknown: 'stillpoint-contract-unknown',
} as const;

/** A VM name that no scenario may use. */
export const contractUnknownVm = 'stillpoint-contract-no-such-vm';

// ---- schemas of the inventory shapes (contracts/vm.ts) -------------------------------------

const hostSchema = z.object({
  name: z.string().min(1),
  osBuild: z.number().int().positive(),
  cluster: z.string().min(1).optional(),
});

const clusterSchema = z.object({
  name: z.string().min(1),
  nodes: z.array(z.string().min(1)).min(1),
  functionalLevel: z.number().int().positive(),
});

const diskSchema = z.object({
  id: z.string().min(1),
  path: z.string().min(1),
  chain: z.array(z.string().min(1)).min(1).optional(),
  volume: z.string().min(1),
  virtualSize: z.number().int().positive(),
  format: z.enum(['vhdx', 'vhd']),
});

const vmSchema = z.object({
  id: z.string().min(1),
  name: z.string().min(1),
  host: z.string().min(1),
  driver: z.string().min(1),
  clustered: z.boolean(),
  cluster: z.string().min(1).optional(),
  configurationVersion: z.string().regex(/^\d+\.\d+$/, 'a "major.minor" version such as "9.0"'),
  generation: z.union([z.literal(1), z.literal(2)]),
  guestOs: z.enum(['windows', 'linux']),
  state: z.enum(['running', 'off', 'saved', 'paused', 'saving', 'starting', 'stopping', 'pausing', 'resuming', 'critical', 'other']),
  checkpointType: z.enum(['disabled', 'production', 'productionOnly', 'standard']),
  integration: z.object({
    vssRequestor: z.object({ enabled: z.boolean(), running: z.boolean() }).optional(),
    vssDaemon: z.boolean().optional(),
  }),
  disks: z.array(diskSchema),
  configuration: z.record(z.string(), z.unknown()).optional(),
});

const inventorySchema = z.object({
  hosts: z.array(hostSchema),
  clusters: z.array(clusterSchema),
  vms: z.array(vmSchema),
});

/** Check an inventory's shapes and cross references; returns every problem found (empty when valid). */
export function inventoryProblems(inventory: Inventory, driverName: string): string[] {
  const problems: string[] = [];
  const parsed = inventorySchema.safeParse(inventory);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(`inventory.${issue.path.join('.')}: ${issue.message}`);
    return problems;
  }
  const hosts = new Set(inventory.hosts.map((h) => h.name.toLowerCase()));
  const clusters = new Map(inventory.clusters.map((c) => [c.name.toLowerCase(), c]));
  const ids = new Set<string>();
  for (const host of inventory.hosts) {
    if (host.cluster && !clusters.has(host.cluster.toLowerCase())) problems.push(`host ${host.name}: cluster "${host.cluster}" is not in inventory.clusters`);
  }
  for (const cluster of inventory.clusters) {
    for (const node of cluster.nodes) {
      if (!hosts.has(node.toLowerCase())) problems.push(`cluster ${cluster.name}: node "${node}" is not in inventory.hosts (its OS build is needed for the prerequisites)`);
    }
  }
  for (const vm of inventory.vms) {
    const where = `VM ${vm.name} (${vm.id})`;
    if (ids.has(vm.id)) problems.push(`${where}: duplicate VM id`);
    ids.add(vm.id);
    if (vm.driver !== driverName) problems.push(`${where}: driver is "${vm.driver}", expected the driver's instance name "${driverName}"`);
    if (!hosts.has(vm.host.toLowerCase())) problems.push(`${where}: host "${vm.host}" is not in inventory.hosts`);
    if (vm.clustered && !vm.cluster) problems.push(`${where}: clustered but no cluster name`);
    if (vm.cluster && !clusters.has(vm.cluster.toLowerCase())) problems.push(`${where}: cluster "${vm.cluster}" is not in inventory.clusters`);
    if (!vm.clustered && vm.cluster) problems.push(`${where}: has cluster "${vm.cluster}" but clustered is false`);
    if (vm.guestOs === 'windows' && !vm.integration.vssRequestor) problems.push(`${where}: a Windows guest must report integration.vssRequestor`);
    if (vm.guestOs === 'linux' && vm.integration.vssDaemon === undefined) problems.push(`${where}: a Linux guest must report integration.vssDaemon`);
    const diskIds = new Set<string>();
    for (const disk of vm.disks) {
      if (diskIds.has(disk.id)) problems.push(`${where} disk ${disk.id}: duplicate disk id`);
      diskIds.add(disk.id);
      if (disk.chain && disk.chain[0] !== disk.path) problems.push(`${where} disk ${disk.id}: chain[0] (${disk.chain[0]}) must be the disk's path (${disk.path})`);
    }
  }
  return problems;
}

// ---- the suite -------------------------------------------------------------------------------

function findVm(inventory: Inventory, nameOrId: string): VmFacts | undefined {
  return inventory.vms.find((vm) => vm.name === nameOrId || vm.id === nameOrId);
}

async function requireVm(t: ExecutionContext, driver: HypervisorDriver, nameOrId: string, role: string): Promise<VmFacts> {
  const vm = findVm(await driver.inventory(), nameOrId);
  if (!vm) throw new NotFoundError(`the scenario's ${role} "${nameOrId}" is not in the driver's inventory`, { where: `driver ${driver.name}` });
  t.truthy(vm, role);
  return vm;
}

function request(name: string, kind: CheckpointRequest['kind'], jobId: string, productionOnly = false): CheckpointRequest {
  return { name, kind, productionOnly, jobId };
}

/** The checks every checkpoint makes, against the VM as it was before the checkpoint. */
function checkCheckpointShape(t: ExecutionContext, driver: HypervisorDriver, before: VmFacts, cp: Checkpoint, name: string, local: boolean): void {
  t.is(cp.name, name, 'checkpoint name is the one asked for');
  t.is(cp.vmId, before.id, 'checkpoint vmId');
  t.is(cp.vmName, before.name, 'checkpoint vmName');
  t.is(cp.driver, driver.name, 'checkpoint driver is the driver instance name');
  t.true(typeof cp.id === 'string' && cp.id.length > 0, 'checkpoint id');
  t.false(Number.isNaN(Date.parse(cp.createdAt)), `createdAt is a date (${cp.createdAt})`);
  t.is(cp.disks.length, before.disks.length, 'one AVHDX per disk');
  for (const disk of before.disks) {
    const cd = cp.disks.find((d) => d.diskId === disk.id);
    if (!cd) { t.fail(`checkpoint has no entry for disk ${disk.id}`); continue; }
    t.regex(cd.avhdx, /\.avhdx$/i, `disk ${disk.id}: the new differencing disk is an AVHDX`);
    t.true(cd.chain.length >= 1, `disk ${disk.id}: frozen chain is not empty`);
    t.false(cd.chain.includes(cd.avhdx), `disk ${disk.id}: the AVHDX is not part of the frozen chain`);
    t.is(cd.chain[0], disk.path, `disk ${disk.id}: the frozen chain starts at the previous top of the chain`);
    if (disk.chain) t.deepEqual(cd.chain, disk.chain, `disk ${disk.id}: the frozen chain is the chain the VM had`);
    t.is(cd.volume, disk.volume, `disk ${disk.id}: volume`);
    t.is(cd.virtualSize, disk.virtualSize, `disk ${disk.id}: virtual size`);
    if (local) {
      t.true(existsSync(cd.avhdx), `disk ${disk.id}: ${cd.avhdx} exists`);
      for (const file of cd.chain) t.true(existsSync(file), `disk ${disk.id}: chain file ${file} exists`);
    }
  }
}

/** After a checkpoint the VM writes to the AVHDXs; after its merge it writes to the old tops again. */
async function checkRedirected(t: ExecutionContext, driver: HypervisorDriver, vmName: string, cp: Checkpoint): Promise<void> {
  const vm = findVm(await driver.inventory(), vmName);
  t.truthy(vm, `${vmName} is still in the inventory after the checkpoint`);
  for (const cd of cp.disks) {
    const disk = vm?.disks.find((d) => d.id === cd.diskId);
    t.is(disk?.path, cd.avhdx, `disk ${cd.diskId}: the VM writes to the AVHDX after the checkpoint`);
  }
}

async function checkMerged(t: ExecutionContext, driver: HypervisorDriver, before: VmFacts, cp: Checkpoint, local: boolean): Promise<void> {
  const listed = await driver.listCheckpoints();
  t.false(listed.some((c) => c.id === cp.id), 'the merged checkpoint is no longer listed');
  const vm = findVm(await driver.inventory(), before.id);
  for (const disk of before.disks) {
    const now = vm?.disks.find((d) => d.id === disk.id);
    t.is(now?.path, disk.path, `disk ${disk.id}: after the merge the VM writes to its previous top again`);
  }
  if (local) for (const cd of cp.disks) t.false(existsSync(cd.avhdx), `disk ${cd.diskId}: ${cd.avhdx} was deleted by the merge`);
}

function checkRanges(t: ExecutionContext, ranges: ByteRange[], virtualSize: number, diskId: string): void {
  let end = 0;
  for (const r of ranges) {
    t.true(Number.isInteger(r.offset) && Number.isInteger(r.length) && r.offset >= 0 && r.length > 0, `disk ${diskId}: range ${JSON.stringify(r)} is well formed`);
    t.true(r.offset + r.length <= virtualSize, `disk ${diskId}: range ${JSON.stringify(r)} lies within the disk (${virtualSize} bytes)`);
    t.true(r.offset >= end, `disk ${diskId}: ranges are sorted and do not overlap`);
    end = r.offset + r.length;
  }
}

function covered(ranges: ByteRange[], want: ByteRange): boolean {
  let pos = want.offset;
  const end = want.offset + want.length;
  for (const r of ranges) {
    if (r.offset <= pos && r.offset + r.length > pos) pos = r.offset + r.length;
    if (pos >= end) return true;
  }
  return pos >= end;
}

/**
 * Register the contract tests on `test` (ava's default export). `setup` builds a fresh driver
 * and scenario for each test; `teardown` releases it (stop guests, remove temporary files).
 */
export function driverContract(test: TestFn, setup: () => Promise<DriverContractSetup>): void {
  const run = (title: string, body: (t: ExecutionContext, s: DriverContractSetup) => Promise<void>) => {
    test.serial(`driver contract: ${title}`, async (t) => {
      const s = await setup();
      try {
        await body(t, s);
      } finally {
        await s.teardown();
      }
    });
  };

  run('inventory shapes are valid (VMs, hosts with builds, clusters)', async (t, { driver, scenario }) => {
    const inventory = await driver.inventory();
    t.deepEqual(inventoryProblems(inventory, driver.name), []);
    const running = await requireVm(t, driver, scenario.runningVm, 'running VM');
    t.is(running.state, 'running');
    t.true(running.disks.length >= 1, `${running.name} has at least one disk`);
    if (scenario.offVm) t.is((await requireVm(t, driver, scenario.offVm, 'off VM')).state, 'off');
    if (scenario.unquiescableVm) t.is((await requireVm(t, driver, scenario.unquiescableVm, 'unquiescable VM')).state, 'running');
    t.is(typeof driver.quiescesOnCheckpoint, 'boolean');
  });

  run('production checkpoint: one AVHDX per disk over the frozen chain, listed, merged, merge idempotent', async (t, { driver, scenario }) => {
    const jobId = scenario.jobId ?? 'contract';
    const before = await requireVm(t, driver, scenario.runningVm, 'running VM');
    const cp = await driver.createCheckpoint(before, request(contractNames.production, 'production', jobId));
    try {
      checkCheckpointShape(t, driver, before, cp, contractNames.production, !!scenario.filesAreLocal);
      if (driver.quiescesOnCheckpoint) t.is(cp.consistency, 'application', `a production checkpoint of ${before.name} quiesces the guest (${cp.consistencyReason ?? ''})`);
      const listed = await driver.listCheckpoints();
      const ref = listed.find((c) => c.id === cp.id);
      t.truthy(ref, 'listCheckpoints shows the new checkpoint');
      t.is(ref?.name, contractNames.production);
      t.is(ref?.vmId, before.id);
      t.is(ref?.driver, driver.name);
      for (const c of listed) t.true(c.name.startsWith('stillpoint-'), `listCheckpoints lists only Stillpoint's checkpoints (${c.name})`);
      await checkRedirected(t, driver, before.name, cp);
    } finally {
      await driver.mergeCheckpoint(before, cp);
    }
    await checkMerged(t, driver, before, cp, !!scenario.filesAreLocal);
    await t.notThrowsAsync(driver.mergeCheckpoint(before, cp), 'merging a checkpoint that is already merged is not an error');
  });

  run('standard checkpoint: crash-consistent, same shape, merged', async (t, { driver, scenario }) => {
    const before = await requireVm(t, driver, scenario.runningVm, 'running VM');
    const cp = await driver.createCheckpoint(before, request(contractNames.standard, 'standard', scenario.jobId ?? 'contract'));
    try {
      checkCheckpointShape(t, driver, before, cp, contractNames.standard, !!scenario.filesAreLocal);
      t.is(cp.consistency, 'crash', 'a standard checkpoint does not quiesce');
    } finally {
      await driver.mergeCheckpoint(before, cp);
    }
    await checkMerged(t, driver, before, cp, !!scenario.filesAreLocal);
  });

  run('a guest that cannot be quiesced: production falls back with a reason, productionOnly fails', async (t, { driver, scenario }) => {
    if (!scenario.unquiescableVm) { t.log('scenario has no unquiescable VM; nothing to check'); t.pass(); return; }
    const before = await requireVm(t, driver, scenario.unquiescableVm, 'unquiescable VM');
    const jobId = scenario.jobId ?? 'contract';
    const error = await t.throwsAsync(driver.createCheckpoint(before, request(contractNames.productionOnly, 'production', jobId, true)));
    t.true(error instanceof StillpointError, `productionOnly fails with a StillpointError (${error?.name})`);
    t.true(error?.message.includes(before.name) ?? false, `the error names the VM: ${error?.message}`);
    t.false((await driver.listCheckpoints()).some((c) => c.name === contractNames.productionOnly && c.vmId === before.id), 'a failed checkpoint leaves nothing behind');
    const cp = await driver.createCheckpoint(before, request(contractNames.fallback, 'production', jobId));
    try {
      checkCheckpointShape(t, driver, before, cp, contractNames.fallback, !!scenario.filesAreLocal);
      t.is(cp.consistency, 'crash', 'without quiescing the checkpoint is crash-consistent');
      t.true((cp.consistencyReason ?? '').length > 0, 'and says why');
    } finally {
      await driver.mergeCheckpoint(before, cp);
    }
    await checkMerged(t, driver, before, cp, !!scenario.filesAreLocal);
  });

  run('a VM that is off can be checkpointed and merged', async (t, { driver, scenario }) => {
    if (!scenario.offVm) { t.log('scenario has no off VM; nothing to check'); t.pass(); return; }
    const before = await requireVm(t, driver, scenario.offVm, 'off VM');
    if (before.disks.length === 0) { t.log(`${before.name} has no disks`); t.pass(); return; }
    const cp = await driver.createCheckpoint(before, request(contractNames.offVm, 'production', scenario.jobId ?? 'contract'));
    try {
      checkCheckpointShape(t, driver, before, cp, contractNames.offVm, !!scenario.filesAreLocal);
    } finally {
      await driver.mergeCheckpoint(before, cp);
    }
    await checkMerged(t, driver, before, cp, !!scenario.filesAreLocal);
  });

  run('reference points and changed ranges, when the driver tracks changes', async (t, { driver, scenario }) => {
    const tracks = scenario.changeTracking ?? !!(driver.createReferencePoint && driver.changedRanges);
    if (!tracks) { t.log(`driver ${driver.name} does not track changes`); t.pass(); return; }
    if (!driver.createReferencePoint || !driver.changedRanges) { t.fail('scenario.changeTracking is true but the driver lacks createReferencePoint/changedRanges'); return; }
    const jobId = scenario.jobId ?? 'contract';
    const vm = await requireVm(t, driver, scenario.runningVm, 'running VM');
    const first = await driver.createCheckpoint(vm, request(contractNames.tracking1, 'production', jobId));
    let point;
    try {
      point = await driver.createReferencePoint(vm, first);
      t.is(point.vmId, vm.id, 'reference point vmId');
      for (const disk of vm.disks) t.true(typeof point.disks[disk.id] === 'string', `reference point has a token for disk ${disk.id}`);
    } finally {
      await driver.mergeCheckpoint(vm, first);
    }
    const expected = (await scenario.makeChanges?.(vm)) ?? undefined;
    const after = await requireVm(t, driver, scenario.runningVm, 'running VM');
    const second = await driver.createCheckpoint(after, request(contractNames.tracking2, 'production', jobId));
    try {
      for (const disk of after.disks) {
        const ranges = await driver.changedRanges(after, disk.id, point);
        t.not(ranges, null, `disk ${disk.id}: changes since the reference point are known (kept across the merge)`);
        if (!ranges) continue;
        checkRanges(t, ranges, disk.virtualSize, disk.id);
        for (const want of expected?.[disk.id] ?? []) t.true(covered(ranges, want), `disk ${disk.id}: changed range ${JSON.stringify(want)} is reported`);
      }
    } finally {
      await driver.mergeCheckpoint(after, second);
    }
    await driver.removeReferencePoint?.(after, point);
    t.false((await driver.listCheckpoints()).some((c) => c.vmId === vm.id), 'no checkpoint is left on the VM');
  });

  run('an unknown VM gives a clear error', async (t, { driver, scenario }) => {
    const known = await requireVm(t, driver, scenario.runningVm, 'running VM');
    const ghost: VmFacts = { ...known, id: '00000000-0000-4000-8000-00000000dead', name: contractUnknownVm };
    const error = await t.throwsAsync(driver.createCheckpoint(ghost, request(contractNames.unknown, 'production', scenario.jobId ?? 'contract')));
    t.true(error instanceof NotFoundError, `a checkpoint of an unknown VM rejects with NotFoundError (got ${error?.name}: ${error?.message})`);
    t.true(error?.message.includes(contractUnknownVm) ?? false, `the error names the VM: ${error?.message}`);
    t.false((await driver.listCheckpoints()).some((c) => c.name === contractNames.unknown), 'nothing was created');
  });
}
