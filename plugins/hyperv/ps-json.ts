import { StillpointError } from '../../core/errors.ts';

/**
 * Readers for PowerShell's JSON in both shapes:
 * - Windows PowerShell 5.1: enums as numbers, dates as `\/Date(1700000000000)\/` (parsed: `/Date(…)/`),
 * - PowerShell 7 with -EnumsAsStrings: enums by name, dates as ISO 8601 strings.
 * ConvertTo-Json also collapses a one-element result to the element and no result to null: `asArray`.
 */

/** Error for output that does not have the shape a cmdlet documents. */
export function shapeError(what: string, where: string, detail: string): StillpointError {
  return new StillpointError(`unexpected ${what} in PowerShell output: ${detail}`, {
    where,
    hint: 'The host may run a PowerShell or Hyper-V version this driver does not know; record its output (see plugins/hyperv/README.md) and report it',
  });
}

export function asArray(value: unknown): unknown[] {
  if (value === null || value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

export type Json = Record<string, unknown>;

export function asObject(value: unknown, what: string, where: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw shapeError(what, where, `expected an object, got ${JSON.stringify(value)?.slice(0, 200)}`);
  }
  return value as Json;
}

export function str(o: Json, key: string, where: string): string {
  const v = o[key];
  if (typeof v !== 'string') throw shapeError(`${key}`, where, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

export function optStr(o: Json, key: string): string | undefined {
  const v = o[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

export function num(o: Json, key: string, where: string): number {
  const v = o[key];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  throw shapeError(`${key}`, where, `expected a number, got ${JSON.stringify(v)}`);
}

export function optNum(o: Json, key: string): number | undefined {
  const v = o[key];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return Number(v);
  return undefined;
}

export function bool(o: Json, key: string, where: string): boolean {
  const v = o[key];
  if (typeof v === 'boolean') return v;
  throw shapeError(`${key}`, where, `expected true or false, got ${JSON.stringify(v)}`);
}

/** An enum written as a number (5.1) or by name (7): returns the name. */
export function enumName(
  o: Json, key: string, values: Readonly<Record<string, number>>, where: string,
): string {
  const v = o[key];
  if (typeof v === 'string') {
    const hit = Object.keys(values).find((k) => k.toLowerCase() === v.toLowerCase());
    if (hit) return hit;
    throw shapeError(key, where, `unknown value "${v}" (known: ${Object.keys(values).join(', ')})`);
  }
  if (typeof v === 'number') {
    const hit = Object.entries(values).find(([, n]) => n === v);
    if (hit) return hit[0];
    throw shapeError(key, where, `unknown value ${v}`);
  }
  throw shapeError(key, where, `expected an enum (number or name), got ${JSON.stringify(v)}`);
}

/** A date written as `/Date(ms)/` or `/Date(ms+0100)/` (5.1) or ISO 8601 (7): returns ISO 8601 UTC. */
export function date(o: Json, key: string, where: string): string {
  const v = o[key];
  const parsed = parseDate(v);
  if (parsed === undefined) throw shapeError(key, where, `expected a date, got ${JSON.stringify(v)}`);
  return parsed;
}

export function parseDate(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^\/Date\((-?\d+)([+-]\d{4})?\)\/$/.exec(v);
  if (m) return new Date(Number(m[1])).toISOString();
  if (/^\d{4}-\d{2}-\d{2}T/.test(v)) {
    const d = new Date(v);
    if (!Number.isNaN(d.getTime())) return d.toISOString();
  }
  return undefined;
}

// ---- Hyper-V enums (Microsoft.HyperV.PowerShell / Microsoft.Vhd.PowerShell) ------------------

export const VMState = {
  Other: 1, Running: 2, Off: 3, Stopping: 4, Saved: 6, Paused: 9, Starting: 10, Reset: 11,
  Saving: 32773, Pausing: 32776, Resuming: 32777, FastSaved: 32779, FastSaving: 32780,
  ForceShutdown: 32781, ForceReboot: 32782, Hibernated: 32783, ComponentServicing: 32784,
  RunningCritical: 32785, OffCritical: 32786, StoppingCritical: 32787, SavedCritical: 32788,
  PausedCritical: 32789, StartingCritical: 32790, ResetCritical: 32791, SavingCritical: 32792,
  PausingCritical: 32793, ResumingCritical: 32794, FastSavedCritical: 32795, FastSavingCritical: 32796,
} as const;

export const CheckpointType = { Disabled: 2, Production: 3, ProductionOnly: 4, Standard: 5 } as const;
export const VhdFormat = { Unknown: 0, VHD: 2, VHDX: 3, VHDSet: 4 } as const;
export const VhdType = { Unknown: 0, Fixed: 2, Dynamic: 3, Differencing: 4 } as const;
export const ControllerType = { IDE: 0, SCSI: 1, PMEM: 2 } as const;
export const SnapshotType = {
  Standard: 0, Recovery: 1, Planned: 2, Missing: 5, Replica: 6, AppConsistentReplica: 7, SyncedReplica: 8,
} as const;
export const IntegrationStatus = {
  Ok: 2, Degraded: 3, Error: 6, NonRecoverableError: 7, NoContact: 12, LostCommunication: 13,
  ProtocolMismatch: 32775, ApplicationCritical: 32782, CommunicationTimedOut: 32783,
  CommunicationFailed: 32784, Disabled: 32896,
} as const;
/** Microsoft.FailoverClusters.PowerShell.ClusterNodeState */
export const ClusterNodeState = { Up: 0, Down: 1, Paused: 2, Joining: 3, Unknown: -1 } as const;
