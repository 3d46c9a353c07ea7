import { z } from 'zod';
import type { ByteRange, Checkpoint, HypervisorDriver, ReferencePoint } from '../contracts/driver.ts';
import type { VmFacts } from '../contracts/vm.ts';
import type { DiskResult } from './types.ts';

/**
 * Change tracking between restore points (incremental forever).
 *
 * The base of an incremental is the VM's latest restore point in the repository (the one the
 * repository's writer starts from, whatever job made it). When that restore point keeps a reference
 * point of the same driver instance and VM, the driver is asked per disk for the ranges changed since
 * it; only those are read, on top of the base's chunk table. Anything else — no previous restore
 * point, a driver without change tracking, a reset, an error — reads every allocated extent (unchanged
 * chunks are skipped by hash) and says why. Every restore point is logically full either way.
 */

/** A reference point as a restore point's manifest keeps it (`referencePoint`): the driver's point and who made it. */
export const storedReferencePointSchema = z.object({
  /** Driver instance that made it (`drivers[].name`). */
  driver: z.string().min(1),
  /** The driver's id of the point (Hyper-V: the Msvm_VirtualSystemReferencePoint InstanceID). */
  id: z.string().min(1),
  vmId: z.string().min(1),
  /** Per disk id: the driver's opaque token (Hyper-V: the RCT id). */
  disks: z.record(z.string(), z.string()),
  /** When the checkpoint it was made from was taken. */
  createdAt: z.string().optional(),
  /**
   * Set when the point was carried over from an earlier restore point (the VM was off: no checkpoint
   * to make a new point from); the id of the restore point that made it.
   */
  carriedFrom: z.string().optional(),
});
export type StoredReferencePoint = z.output<typeof storedReferencePointSchema>;

export function toStoredReferencePoint(driver: string, point: ReferencePoint, createdAt?: string): StoredReferencePoint {
  return { driver, id: point.id, vmId: point.vmId, disks: { ...point.disks }, ...(createdAt ? { createdAt } : {}) };
}

export function toReferencePoint(stored: StoredReferencePoint): ReferencePoint {
  return { id: stored.id, vmId: stored.vmId, disks: { ...stored.disks } };
}

/** What to read of one disk: the changed ranges, or `null` and why everything is read. */
export interface DiskChanges {
  changed: ByteRange[] | null;
  /** Why every allocated extent is read (when `changed` is null). */
  reason?: string;
}

/** The base of an incremental: the previous restore point and its reference point, or why there is none. */
export type ChangeBase =
  | { previousId: string; point: StoredReferencePoint }
  | { previousId: string | null; point?: undefined; reason: string };

/** True when the driver can make reference points and tell changes since them. */
export function tracksChanges(driver: HypervisorDriver): boolean {
  return typeof driver.createReferencePoint === 'function' && typeof driver.changedRanges === 'function';
}

/**
 * Decide the base of a VM's incremental from its previous restore point (or why there is none).
 * `driver` is the driver instance's name and whether it tracks changes (`tracksChanges`).
 */
export function changeBase(
  driver: { name: string; tracks: boolean },
  vmId: string,
  previous: { id: string; referencePoint?: unknown } | null | undefined,
): ChangeBase {
  if (!driver.tracks) return { previousId: previous?.id ?? null, reason: `driver "${driver.name}" has no change tracking` };
  if (!previous) return { previousId: null, reason: 'no previous restore point of this VM' };
  const raw = previous.referencePoint;
  if (raw === undefined || raw === null) {
    return { previousId: previous.id, reason: `the previous restore point ${previous.id} has no reference point (it was made without change tracking, the VM was off, or creating the reference point failed)` };
  }
  const parsed = storedReferencePointSchema.safeParse(raw);
  if (!parsed.success) {
    return { previousId: previous.id, reason: `the reference point of the previous restore point ${previous.id} is not one Stillpoint can use (${parsed.error.issues.map((i) => `${i.path.join('.') || '(point)'}: ${i.message}`).join('; ')})` };
  }
  const point = parsed.data;
  if (point.driver !== driver.name) {
    return { previousId: previous.id, reason: `the previous restore point ${previous.id} was tracked by driver "${point.driver}", not "${driver.name}"` };
  }
  if (point.vmId !== vmId) {
    return { previousId: previous.id, reason: `the reference point of the previous restore point ${previous.id} belongs to VM ${point.vmId}, not ${vmId}` };
  }
  return { previousId: previous.id, point };
}

/** Check what a driver returned: integers, inside the disk. Returns why not, or undefined. */
export function invalidRanges(ranges: unknown, virtualSize: number): string | undefined {
  if (!Array.isArray(ranges)) return `not a list of ranges (${typeof ranges})`;
  for (const r of ranges as Array<Partial<ByteRange>>) {
    const { offset, length } = r ?? {};
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset! < 0 || length! < 0) {
      return `range ${JSON.stringify(r)} is not a non-negative integer offset and length`;
    }
    if (offset! + length! > virtualSize) return `range ${JSON.stringify(r)} ends past the disk's ${virtualSize} bytes`;
  }
  return undefined;
}

/**
 * What to read of one disk: asks the driver for the ranges changed since the base's reference point.
 * Never throws: a driver error, a reset (`null`) or a shape the engine cannot use reads everything, with
 * the reason. `previousDisk` is the base restore point's record of the disk (null when it lacks it);
 * `driver.changedRanges` asks the driver (`HypervisorDriver.changedRanges` for the VM).
 */
export async function diskChanges(
  driver: { name: string; changedRanges(diskId: string, since: ReferencePoint): Promise<ByteRange[] | null> },
  base: ChangeBase,
  disk: { diskId: string; virtualSize: number },
  previousDisk: { virtualSize?: unknown } | null | undefined,
): Promise<DiskChanges> {
  if (!base.point) return { changed: null, reason: base.reason };
  const since = `reference point ${base.point.id} of restore point ${base.previousId}`;
  if (!previousDisk) return { changed: null, reason: `the previous restore point ${base.previousId} lacks this disk` };
  if (typeof previousDisk.virtualSize === 'number' && previousDisk.virtualSize !== disk.virtualSize) {
    return { changed: null, reason: `the disk's size changed since the previous restore point (${previousDisk.virtualSize} -> ${disk.virtualSize} bytes)` };
  }
  if (!(disk.diskId in base.point.disks)) return { changed: null, reason: `${since} does not track this disk` };
  let ranges: ByteRange[] | null;
  try {
    ranges = await driver.changedRanges(disk.diskId, toReferencePoint(base.point));
  } catch (e) {
    return { changed: null, reason: `asking driver "${driver.name}" for the changed ranges since ${since} failed: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (ranges === null) return { changed: null, reason: `change tracking was reset: driver "${driver.name}" knows no changes since ${since}` };
  const bad = invalidRanges(ranges, disk.virtualSize);
  if (bad) return { changed: null, reason: `driver "${driver.name}" returned changed ranges the engine cannot use: ${bad}` };
  return { changed: ranges.filter((r) => r.length > 0) };
}

/** Bytes of the data extents that the changed ranges touch (what an incremental will read, before chunk alignment). */
export function changedDataBytes(changed: ByteRange[], data: Array<{ offset: number; length: number }>): number {
  const a = [...changed].sort((x, y) => x.offset - y.offset);
  const b = [...data].sort((x, y) => x.offset - y.offset);
  let total = 0;
  let covered = 0; // end of what was counted, so overlapping changed ranges count once
  let j = 0;
  for (const r of a) {
    const start = Math.max(r.offset, covered);
    const end = r.offset + r.length;
    if (end <= start) continue;
    while (j < b.length && b[j].offset + b[j].length <= start) j++;
    for (let k = j; k < b.length && b[k].offset < end; k++) {
      const s = Math.max(start, b[k].offset);
      const t = Math.min(end, b[k].offset + b[k].length);
      if (t > s) total += t - s;
    }
    covered = end;
  }
  return total;
}

const FULL_PREFIX = /^full read: /;
const HASH_SUFFIX = /; unchanged chunks were skipped by hash$/;

/**
 * How a VM's disks were read, for its result: `incremental (changed ranges)` when every disk was read
 * from changed ranges, else `full read: <why>` (per disk when the disks differ).
 */
export function readMode(disks: Array<Pick<DiskResult, 'diskId' | 'fullRead' | 'reason'>>): string | undefined {
  if (disks.length === 0) return undefined;
  const full = disks.filter((d) => d.fullRead);
  if (full.length === 0) return 'incremental (changed ranges)';
  const why = (d: (typeof full)[number]) => (d.reason ?? 'no reason given').replace(FULL_PREFIX, '').replace(HASH_SUFFIX, '');
  const reasons = [...new Set(full.map(why))];
  if (full.length === disks.length && reasons.length === 1) return `full read: ${reasons[0]}`;
  return `full read: ${full.map((d) => `disk ${d.diskId}: ${why(d)}`).join('; ')}${full.length < disks.length ? ` (other disks: changed ranges)` : ''}`;
}

/**
 * Change tracking for one VM's backup, in the order `runJob` calls it (core/engine/pipeline.ts):
 * `plan` after the checkpoint and before the read; `createPoint` after every disk is stored, before
 * the commit and the merge; `committed` or `failed` at the end. Driver failures never fail the backup:
 * they become full reads with the reason, or warnings (`warn`).
 */
export class VmChangeTracking {
  base: ChangeBase | undefined;
  created: StoredReferencePoint | undefined;

  constructor(
    private readonly driver: HypervisorDriver,
    private readonly vm: VmFacts,
    private readonly warn: (message: string) => void,
    private readonly log: (message: string) => void = () => {},
  ) {}

  /**
   * The base (from the VM's previous restore point in the repository) and, per disk, the changed ranges
   * since its reference point or why the disk is read whole. `previousDisk(id)` is the base restore
   * point's record of a disk.
   */
  async plan(
    previous: { id: string; referencePoint?: unknown } | null | undefined,
    disks: Array<{ diskId: string; virtualSize: number }>,
    previousDisk: (diskId: string) => unknown,
  ): Promise<Map<string, DiskChanges>> {
    const { driver, vm } = this;
    const base = changeBase({ name: driver.name, tracks: tracksChanges(driver) }, vm.id, previous);
    this.base = base;
    const ask = { name: driver.name, changedRanges: (diskId: string, since: ReferencePoint) => driver.changedRanges!(vm, diskId, since) };
    const out = new Map<string, DiskChanges>();
    for (const disk of disks) {
      const c = await diskChanges(ask, base, disk, (previousDisk(disk.diskId) ?? null) as { virtualSize?: unknown } | null);
      this.log(`disk ${disk.diskId}: ${c.changed ? `${c.changed.length} changed range(s)` : `full read: ${c.reason}`}`);
      out.set(disk.diskId, c);
    }
    return out;
  }

  /** Turn the checkpoint into a reference point (before the merge). A failure is a warning: the next backup reads everything. */
  async createPoint(checkpoint: Checkpoint | undefined): Promise<StoredReferencePoint | undefined> {
    if (!checkpoint || !tracksChanges(this.driver)) return undefined;
    try {
      const point = await this.driver.createReferencePoint!(this.vm, checkpoint);
      this.log(`checkpoint ${checkpoint.name} is now reference point ${point.id}`);
      this.created = toStoredReferencePoint(this.driver.name, point, checkpoint.createdAt);
    } catch (e) {
      this.warn(`could not turn checkpoint ${checkpoint.name} into a reference point (the next backup reads every allocated extent): ${e instanceof Error ? e.message : String(e)}`);
    }
    return this.created;
  }

  /**
   * What the new restore point keeps: the new point, or — for a VM that is off (no checkpoint) — the
   * base's point carried on (its disks did not change since they were read, so the changes since that
   * point stay a superset).
   */
  keep(hadCheckpoint: boolean): StoredReferencePoint | undefined {
    if (this.created) return this.created;
    const base = this.base;
    if (!hadCheckpoint && base?.point) return { ...base.point, carriedFrom: base.point.carriedFrom ?? base.previousId };
    return undefined;
  }

  /** The restore point is committed: the base's reference point is no longer needed (unless carried on). */
  async committed(hadCheckpoint: boolean): Promise<void> {
    const base = this.base;
    if (!base?.point) return;
    if (!this.created && !hadCheckpoint) return; // carried on
    await this.remove(base.point, `of the previous restore point ${base.previousId}`);
  }

  /** The backup failed before its commit: remove the new reference point; the base's stays. */
  async failed(): Promise<void> {
    if (this.created) await this.remove(this.created, 'made for the restore point that failed');
    this.created = undefined;
  }

  private async remove(point: StoredReferencePoint, what: string): Promise<void> {
    if (!this.driver.removeReferencePoint) return;
    try {
      await this.driver.removeReferencePoint(this.vm, toReferencePoint(point));
      this.log(`removed reference point ${point.id} ${what}`);
    } catch (e) {
      this.warn(`could not remove reference point ${point.id} ${what}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}
