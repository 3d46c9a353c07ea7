/**
 * The lab driver: a simulated Hyper-V host (and cluster) in a directory, on real VHDX files.
 *
 * Lifetime: the driver opens the lab on first use (lock, create missing disks, start one guest
 * workload process per running VM) and closes it at `close()` (the plugin calls it at engine
 * shutdown): guests finish their transaction and stop. A running VM therefore "runs" while a
 * Stillpoint process uses the lab; between processes its disks rest at a transaction boundary.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import createDebug from 'debug';
import type {
  ByteRange, Checkpoint, CheckpointRef, CheckpointRequest, HypervisorDriver, ReferencePoint,
} from '../../core/contracts/driver.ts';
import type { Inventory, VmFacts } from '../../core/contracts/vm.ts';
import { NotFoundError, StillpointError, TransientError } from '../../core/errors.ts';
import { processAlive } from '../../core/util/durable.ts';
import { avhdxPathFor, createAvhdx, createBaseDisk, exists, mergeAvhdx } from './disks.ts';
import { FailureInjector } from './failures.ts';
import { GuestProcess } from './guest/guest.ts';
import type { WorkloadSettings } from './guest/protocol.ts';
import { LabPaths, loadLab, type Failure, type LabFile, type LabVm } from './model.ts';
import { loadVmState, newTrackingId, saveVmState, type StoredCheckpoint, type VmState } from './state.ts';
import { EventTrace } from './trace.ts';

const debug = createDebug('stillpoint:lab');

export interface LabDriverOptions {
  /** Instance name (the config's `drivers[].name`). */
  name: string;
  /** The lab directory (holds lab.json). */
  dir: string;
  /** Failures to inject besides those in lab.json. */
  failures?: Failure[];
  /** Run guest workloads for running VMs (default true). */
  guests?: boolean;
  /** Overrides lab.json's quiesceDeadlineMs. */
  quiesceDeadlineMs?: number;
  /** Overrides of lab.json's workload settings. */
  workload?: Partial<WorkloadSettings>;
}

/** Serialises work per key. */
class KeyedMutex {
  readonly #tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.#tails.set(key, next.catch(() => undefined));
    return next;
  }
}


export class LabDriver implements HypervisorDriver {
  readonly name: string;
  readonly quiescesOnCheckpoint = true;
  readonly paths: LabPaths;
  readonly trace: EventTrace;
  readonly #options: LabDriverOptions;
  #lab: LabFile | undefined;
  #opening: Promise<LabFile> | undefined;
  #failures: FailureInjector | undefined;
  readonly #guests = new Map<string, GuestProcess>();
  readonly #mutex = new KeyedMutex();
  #closed = false;

  constructor(options: LabDriverOptions) {
    this.name = options.name;
    this.#options = options;
    this.paths = new LabPaths(options.dir);
    this.trace = new EventTrace(this.paths.eventsFile);
  }

  // ---- lifecycle --------------------------------------------------------------------------

  /** Open the lab: lock it, create missing disks, start the guests. Called by every method. */
  open(): Promise<LabFile> {
    if (this.#closed) return Promise.reject(new StillpointError('the lab driver is closed', { where: `driver ${this.name}` }));
    this.#opening ??= this.#open().catch((error: unknown) => { this.#opening = undefined; throw error; });
    return this.#opening;
  }

  async #open(): Promise<LabFile> {
    const lab = await loadLab(this.paths);
    await this.#lock();
    try {
      this.#failures = new FailureInjector([...lab.failures, ...(this.#options.failures ?? [])], this.paths.failuresFile, this.trace);
      for (const vm of lab.vms) await this.#ensureDisks(lab, vm);
      this.#lab = lab;
      if (this.#options.guests !== false) {
        for (const vm of lab.vms.filter((v) => v.state === 'running' && v.disks.length > 0)) await this.#startGuest(lab, vm);
      }
      return lab;
    } catch (error) {
      await this.#stopGuests();
      await this.#unlock();
      throw error;
    }
  }

  async #lock(): Promise<void> {
    await mkdir(dirname(this.paths.lockFile), { recursive: true });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeFile(this.paths.lockFile, `${process.pid}\n`, { flag: 'wx' });
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        const pid = Number((await readFile(this.paths.lockFile, 'utf8').catch(() => '')).trim());
        if (pid && pid !== process.pid && processAlive(pid)) {
          throw new StillpointError(`the lab is in use by process ${pid}`, {
            where: this.paths.dir, hint: 'wait for that Stillpoint command to finish (a lab runs its guests for one process at a time)',
          });
        }
        debug('removing stale lab lock of process %d', pid);
        await unlink(this.paths.lockFile).catch(() => undefined);
      }
    }
    throw new StillpointError('could not lock the lab', { where: this.paths.lockFile });
  }

  async #unlock(): Promise<void> {
    const pid = Number((await readFile(this.paths.lockFile, 'utf8').catch(() => '')).trim());
    if (pid === process.pid) await unlink(this.paths.lockFile).catch(() => undefined);
  }

  async #ensureDisks(lab: LabFile, vm: LabVm): Promise<void> {
    const state = await loadVmState(this.paths, vm.id);
    let changed = false;
    for (const disk of vm.disks) {
      const base = this.paths.baseDisk(lab, disk);
      if (!state.disks[disk.id]) {
        state.disks[disk.id] = { chain: [base], trackingId: newTrackingId() };
        changed = true;
      }
      if (!(await exists(base))) {
        await createBaseDisk(base, { virtualSize: disk.virtualSize, blockSize: disk.blockSize, vmId: vm.id, diskId: disk.id, dataPages: lab.workload.dataPages });
        state.disks[disk.id] = { chain: [base], trackingId: newTrackingId() };
        changed = true;
        this.trace.record('disk-created', { vm: vm.name, disk: disk.id, path: base });
      }
      await mkdir(dirname(this.paths.changeLog(vm.id, disk.id)), { recursive: true });
    }
    if (changed) await saveVmState(this.paths, vm.id, state);
  }

  #settings(lab: LabFile, vm: LabVm): WorkloadSettings {
    const w = { ...lab.workload, ...this.#options.workload };
    let seed = 0;
    for (const c of `${vm.id}:${Date.now()}`) seed = (Math.imul(seed, 31) + c.charCodeAt(0)) >>> 0;
    return { pageDelayMs: w.pageDelayMs, txGapMs: w.txGapMs, minPages: w.minPages, maxPages: w.maxPages, holdLimitMs: w.holdLimitMs, seed };
  }

  async #startGuest(lab: LabFile, vm: LabVm): Promise<void> {
    const state = await loadVmState(this.paths, vm.id);
    const disks = vm.disks.map((d) => ({ diskId: d.id, path: state.disks[d.id].chain[0], changeLog: this.paths.changeLog(vm.id, d.id) }));
    const guest = await GuestProcess.start(vm.name, vm.id, disks, this.#settings(lab, vm));
    this.#guests.set(vm.id, guest);
    this.trace.record('guest-started', { vm: vm.name, host: vm.host, detail: `pid ${guest.pid}` });
  }

  async #stopGuests(): Promise<void> {
    const guests = [...this.#guests.entries()];
    this.#guests.clear();
    await Promise.all(guests.map(async ([, guest]) => {
      await guest.stop();
      this.trace.record('guest-stopped', { vm: guest.vmName });
    }));
  }

  /** Stop the guests and release the lab. Safe to call more than once. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const opening = this.#opening;
    if (!opening) return;
    await opening.catch(() => undefined);
    await this.#stopGuests();
    await this.#unlock();
  }

  /** The guest of a running VM (for tests: e.g. to wait for writes). */
  guest(vmId: string): GuestProcess | undefined {
    return this.#guests.get(vmId);
  }

  // ---- inventory -----------------------------------------------------------------------------

  async #answer(step: 'inventory' | 'checkpoint' | 'merge', host: string, vm?: string): Promise<void> {
    const f = await this.#failures!.hostSilent(step, { host, vm });
    if (f) {
      throw new TransientError(f.message ?? `host ${host} does not answer (WinRM: the operation timed out)`, {
        where: `lab host ${host}`, hint: 'check that the host is up and reachable, then run the job again',
      });
    }
  }

  async inventory(): Promise<Inventory> {
    const lab = await this.open();
    for (const host of lab.hosts) await this.#answer('inventory', host.name);
    const vms: VmFacts[] = [];
    for (const vm of lab.vms) vms.push(await this.#facts(lab, vm));
    return {
      hosts: lab.hosts.map((h) => ({ name: h.name, osBuild: h.osBuild, ...(h.cluster ? { cluster: h.cluster } : {}) })),
      clusters: lab.clusters.map((c) => ({ name: c.name, nodes: [...c.nodes], functionalLevel: c.functionalLevel })),
      vms,
    };
  }

  async #facts(lab: LabFile, vm: LabVm): Promise<VmFacts> {
    const state = await loadVmState(this.paths, vm.id);
    const cluster = lab.hosts.find((h) => h.name === vm.host)?.cluster;
    return {
      id: vm.id,
      name: vm.name,
      host: vm.host,
      driver: this.name,
      clustered: !!cluster,
      ...(cluster ? { cluster } : {}),
      configurationVersion: vm.configurationVersion,
      generation: vm.generation,
      guestOs: vm.guestOs,
      state: vm.state,
      checkpointType: vm.checkpointType,
      integration: structuredClone(vm.integration),
      disks: vm.disks.map((d) => {
        const chain = state.disks[d.id]?.chain ?? [this.paths.baseDisk(lab, d)];
        return { id: d.id, path: chain[0], chain: [...chain], volume: this.paths.volumePath(lab, d.volume), virtualSize: d.virtualSize, format: 'vhdx' as const };
      }),
      configuration: { lab: this.paths.dir, volumes: [...new Set(vm.disks.map((d) => d.volume))], ...(vm.notes ? { notes: vm.notes } : {}) },
    };
  }

  #find(lab: LabFile, vm: Pick<VmFacts, 'id' | 'name'>): LabVm {
    const found = lab.vms.find((v) => v.id === vm.id) ?? lab.vms.find((v) => v.name === vm.name && !vm.id);
    if (!found) {
      throw new NotFoundError(`VM ${vm.name} (${vm.id}) does not exist on the lab's hosts`, {
        where: `lab ${this.paths.dir}`, hint: `list the lab's VMs in ${this.paths.labFile}; the inventory may be out of date`,
      });
    }
    return found;
  }

  // ---- checkpoints ---------------------------------------------------------------------------

  /** Why the guest cannot be quiesced, or undefined when it can. */
  #whyNotQuiescable(vm: LabVm): string | undefined {
    if (vm.guestOs === 'windows') {
      const r = vm.integration.vssRequestor;
      if (!r?.enabled) return 'the VSS integration service ("Backup (volume shadow copy)") is disabled';
      if (!r.running) return 'the VSS integration service is not running in the guest';
      return undefined;
    }
    return vm.integration.vssDaemon ? undefined : 'the Hyper-V VSS daemon (hv_vss_daemon) is not running in the guest';
  }

  createCheckpoint(vmFacts: VmFacts, request: CheckpointRequest): Promise<Checkpoint> {
    return this.open().then((lab) => {
      const vm = this.#find(lab, vmFacts);
      return this.#mutex.run(vm.id, () => this.#createCheckpoint(lab, vm, request));
    });
  }

  async #createCheckpoint(lab: LabFile, vm: LabVm, request: CheckpointRequest): Promise<Checkpoint> {
    const where = `lab VM ${vm.name}`;
    this.trace.record('checkpoint-requested', { vm: vm.name, host: vm.host, checkpoint: request.name, detail: request.kind + (request.productionOnly ? ' (production only)' : '') });
    await this.#answer('checkpoint', vm.host, vm.name);
    const fail = (message: string, hint?: string, Kind: typeof StillpointError = StillpointError): never => {
      this.trace.record('checkpoint-failed', { vm: vm.name, checkpoint: request.name, detail: message });
      throw new Kind(message, { where, hint });
    };
    if (vm.checkpointType === 'disabled') fail(`checkpoints are disabled for VM ${vm.name}`, 'set the VM\'s checkpointType to "production" in lab.json');
    if (vm.state !== 'running' && vm.state !== 'off') fail(`VM ${vm.name} is ${vm.state}; a checkpoint needs it running or off`);
    const injected = await this.#failures!.fire('checkpoint', { vm: vm.name, host: vm.host });
    if (injected) fail(injected.message ?? `the checkpoint operation failed for VM ${vm.name} (injected failure)`, 'look at the host\'s Hyper-V-VMMS event log');

    const guest = this.#guests.get(vm.id);
    let consistency: 'application' | 'crash' = request.kind === 'production' ? 'application' : 'crash';
    let consistencyReason: string | undefined;
    let holdId: number | undefined;
    if (request.kind === 'production' && vm.state === 'running') {
      const why = this.#whyNotQuiescable(vm);
      let failed = why;
      if (!why && guest) {
        const deadline = this.#options.quiesceDeadlineMs ?? lab.quiesceDeadlineMs;
        const hang = !!(await this.#failures!.fire('quiesce', { vm: vm.name, host: vm.host }));
        try {
          const held = await guest.hold('boundary', { timeoutMs: deadline, hang });
          holdId = held.id;
          this.trace.record('guest-quiesced', { vm: vm.name, checkpoint: request.name, detail: `at transaction ${JSON.stringify(held.lastTransaction)}` });
        } catch (error) {
          failed = (error as Error).message;
          this.trace.record('quiesce-failed', { vm: vm.name, checkpoint: request.name, detail: failed });
        }
      }
      if (failed) {
        if (request.productionOnly) fail(`the production checkpoint of VM ${vm.name} failed: the guest cannot be quiesced: ${failed}`, 'fix the guest\'s integration services, or allow a fallback (consistency policy "prefer")');
        consistency = 'crash';
        consistencyReason = `a standard checkpoint was taken instead of a production checkpoint: ${failed}`;
      }
    }
    if (guest && holdId === undefined) holdId = (await guest.hold('now')).id;

    // Create the AVHDXs over the current tops.
    const state = await loadVmState(this.paths, vm.id);
    const created: string[] = [];
    const stored: StoredCheckpoint = {
      id: randomUUID(), name: request.name, jobId: request.jobId, kind: request.kind, consistency,
      ...(consistencyReason ? { consistencyReason } : {}), createdAt: new Date().toISOString(), disks: [],
    };
    try {
      for (const disk of vm.disks) {
        const chain = state.disks[disk.id].chain;
        const avhdx = avhdxPathFor(this.paths.baseDisk(lab, disk), chain[0]);
        await createAvhdx(avhdx, chain[0]);
        created.push(avhdx);
        this.trace.record('avhdx-created', { vm: vm.name, disk: disk.id, path: avhdx, checkpoint: request.name });
        stored.disks.push({ diskId: disk.id, avhdx, chain: [...chain], changeLogAt: await this.#changeLogSize(vm.id, disk.id) });
      }
      for (const d of stored.disks) state.disks[d.diskId].chain = [d.avhdx, ...d.chain];
      state.checkpoints.push(stored);
      await saveVmState(this.paths, vm.id, state);
    } catch (error) {
      for (const f of created) await unlink(f).catch(() => undefined);
      if (guest && holdId !== undefined) await guest.resume(holdId).catch(() => undefined);
      fail(`creating the checkpoint of VM ${vm.name} failed: ${(error as Error).message}`);
    }
    if (guest && holdId !== undefined) {
      const inTime = await guest.resume(holdId, Object.fromEntries(stored.disks.map((d) => [d.diskId, d.avhdx])));
      if (consistency === 'application') this.trace.record('guest-thawed', { vm: vm.name, checkpoint: request.name });
      if (!inTime) {
        // The guest thawed itself before the AVHDXs took its writes: the checkpoint is not consistent.
        stored.consistency = 'crash';
        stored.consistencyReason = 'the guest ended the freeze by itself (hold limit) before the checkpoint was taken';
        await saveVmState(this.paths, vm.id, state);
      }
    }
    this.trace.record('checkpoint-created', { vm: vm.name, checkpoint: request.name, detail: stored.consistency });
    return this.#toCheckpoint(lab, vm, stored);
  }

  async #changeLogSize(vmId: string, diskId: string): Promise<number> {
    try { return (await stat(this.paths.changeLog(vmId, diskId))).size; } catch { return 0; }
  }

  #toCheckpoint(lab: LabFile, vm: LabVm, c: StoredCheckpoint): Checkpoint {
    return {
      id: c.id, name: c.name, vmId: vm.id, vmName: vm.name, driver: this.name, createdAt: c.createdAt,
      consistency: c.consistency, ...(c.consistencyReason ? { consistencyReason: c.consistencyReason } : {}),
      disks: c.disks.map((d) => {
        const disk = vm.disks.find((x) => x.id === d.diskId)!;
        return { diskId: d.diskId, avhdx: d.avhdx, chain: [...d.chain], volume: this.paths.volumePath(lab, disk.volume), virtualSize: disk.virtualSize };
      }),
    };
  }

  mergeCheckpoint(vmFacts: VmFacts, checkpoint: CheckpointRef): Promise<void> {
    return this.open().then((lab) => {
      const vm = this.#find(lab, vmFacts);
      return this.#mutex.run(vm.id, () => this.#merge(lab, vm, checkpoint));
    });
  }

  async #merge(lab: LabFile, vm: LabVm, ref: CheckpointRef): Promise<void> {
    const state = await loadVmState(this.paths, vm.id);
    const cp = state.checkpoints.find((c) => c.id === ref.id);
    if (!cp) return; // already merged
    await this.#answer('merge', vm.host, vm.name);
    const injected = await this.#failures!.fire('merge', { vm: vm.name, host: vm.host });
    if (injected) {
      const message = injected.message ?? `the merge of checkpoint ${cp.name} failed: the process cannot access the file because it is being used by another process (${cp.disks[0]?.avhdx ?? 'AVHDX'})`;
      this.trace.record('merge-failed', { vm: vm.name, checkpoint: cp.name, detail: message });
      throw new StillpointError(message, { where: `lab VM ${vm.name}`, hint: 'the checkpoint stays; "stillpoint cleanup" or the next job merges it' });
    }
    for (const d of cp.disks) {
      const chain = state.disks[d.diskId]?.chain ?? [];
      const at = chain.indexOf(d.avhdx);
      if (at > 0) {
        throw new StillpointError(`checkpoint ${cp.name} is not the newest of VM ${vm.name} (disk ${d.diskId} has ${at} newer differencing disk(s))`, {
          where: `lab VM ${vm.name}`, hint: 'merge the newer checkpoints first',
        });
      }
    }
    this.trace.record('merge-started', { vm: vm.name, checkpoint: cp.name });
    const guest = this.#guests.get(vm.id);
    const hold = guest ? await guest.hold('now') : undefined;
    try {
      for (const d of cp.disks) {
        const chain = state.disks[d.diskId].chain;
        if (chain[0] === d.avhdx) {
          if (await exists(d.avhdx)) await mergeAvhdx(d.avhdx);
          state.disks[d.diskId].chain = chain.slice(1);
          await saveVmState(this.paths, vm.id, state);
        }
      }
      state.checkpoints = state.checkpoints.filter((c) => c.id !== cp.id);
      await saveVmState(this.paths, vm.id, state);
    } finally {
      if (guest && hold) await guest.resume(hold.id, Object.fromEntries(vm.disks.map((d) => [d.id, state.disks[d.id].chain[0]])));
    }
    this.trace.record('merged', { vm: vm.name, checkpoint: cp.name });
  }

  async listCheckpoints(): Promise<CheckpointRef[]> {
    const lab = await this.open();
    const refs: CheckpointRef[] = [];
    for (const vm of lab.vms) {
      const state = await loadVmState(this.paths, vm.id);
      for (const c of state.checkpoints) {
        if (c.name.startsWith('stillpoint-')) refs.push({ id: c.id, name: c.name, vmId: vm.id, vmName: vm.name, driver: this.name, createdAt: c.createdAt });
      }
    }
    return refs;
  }

  // ---- change tracking -------------------------------------------------------------------------

  createReferencePoint(vmFacts: VmFacts, checkpoint: Checkpoint): Promise<ReferencePoint> {
    return this.open().then((lab) => {
      const vm = this.#find(lab, vmFacts);
      return this.#mutex.run(vm.id, async () => {
        const state = await loadVmState(this.paths, vm.id);
        const cp = state.checkpoints.find((c) => c.id === checkpoint.id);
        if (!cp) throw new NotFoundError(`checkpoint ${checkpoint.name} (${checkpoint.id}) of VM ${vm.name} does not exist (already merged?)`, { where: `lab VM ${vm.name}`, hint: 'create the reference point before merging the checkpoint' });
        const point = { id: randomUUID(), createdAt: new Date().toISOString(), disks: Object.fromEntries(cp.disks.map((d) => [d.diskId, `${state.disks[d.diskId].trackingId}:${d.changeLogAt}`])) };
        state.referencePoints.push(point);
        await saveVmState(this.paths, vm.id, state);
        this.trace.record('reference-point-created', { vm: vm.name, checkpoint: cp.name, detail: point.id });
        return { id: point.id, vmId: vm.id, disks: point.disks };
      });
    });
  }

  async changedRanges(vmFacts: VmFacts, diskId: string, since: ReferencePoint): Promise<ByteRange[] | null> {
    const lab = await this.open();
    const vm = this.#find(lab, vmFacts);
    const disk = vm.disks.find((d) => d.id === diskId);
    if (!disk) throw new NotFoundError(`VM ${vm.name} has no disk "${diskId}"`, { where: `lab VM ${vm.name}` });
    const state = await loadVmState(this.paths, vm.id);
    const token = since.disks[diskId];
    const m = token ? /^(.+):(\d+)$/.exec(token) : null;
    if (!m || !state.referencePoints.some((p) => p.id === since.id)) return null;
    if (state.disks[diskId]?.trackingId !== m[1]) return null; // tracking was reset (disk re-created)
    const from = Number(m[2]);
    let log: Buffer;
    try { log = await readFile(this.paths.changeLog(vm.id, diskId)); } catch { return from === 0 ? [] : null; }
    if (log.length < from) return null;
    const raw: ByteRange[] = [];
    for (let at = from; at + 16 <= log.length; at += 16) {
      raw.push({ offset: Number(log.readBigUInt64LE(at)), length: Number(log.readBigUInt64LE(at + 8)) });
    }
    return coalesce(raw, disk.virtualSize);
  }

  async removeReferencePoint(vmFacts: VmFacts, point: ReferencePoint): Promise<void> {
    const lab = await this.open();
    const vm = this.#find(lab, vmFacts);
    await this.#mutex.run(vm.id, async () => {
      const state = await loadVmState(this.paths, vm.id);
      const before = state.referencePoints.length;
      state.referencePoints = state.referencePoints.filter((p) => p.id !== point.id);
      if (state.referencePoints.length !== before) {
        await saveVmState(this.paths, vm.id, state);
        this.trace.record('reference-point-removed', { vm: vm.name, detail: point.id });
      }
    });
  }

  // ---- for tests and the snapshot provider ---------------------------------------------------

  /** The lab's volumes: name and directory. */
  async volumes(): Promise<Array<{ name: string; path: string }>> {
    const lab = await this.open();
    return lab.volumes.map((v) => ({ name: v.name, path: this.paths.volumePath(lab, v.name) }));
  }

  /** Stored state of a VM (tests). */
  async vmState(vmId: string): Promise<VmState> {
    return loadVmState(this.paths, vmId);
  }
}

/** Sort, merge overlapping or touching ranges, clamp to the disk. */
export function coalesce(ranges: ByteRange[], virtualSize: number): ByteRange[] {
  const sorted = ranges.filter((r) => r.length > 0 && r.offset < virtualSize).sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of sorted) {
    const end = Math.min(r.offset + r.length, virtualSize);
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, end - last.offset);
    else out.push({ offset: r.offset, length: end - r.offset });
  }
  return out;
}
