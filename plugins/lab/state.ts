/**
 * What the simulated host changed, per VM (state/<vm id>.json): each disk's current chain (top
 * first), its change-tracking id, the checkpoints Stillpoint created and the reference points.
 * Paths inside the lab directory are stored relative to it, so a lab can be moved.
 */
import { randomUUID } from 'node:crypto';
import { isAbsolute, relative, resolve } from 'node:path';
import type { LabPaths } from './model.ts';
import { readJson, writeAtomic } from './model.ts';

export interface StoredCheckpointDisk {
  diskId: string;
  avhdx: string;
  /** The frozen chain below the AVHDX, top first. */
  chain: string[];
  /** Length of the disk's change log when the checkpoint was taken (change tracking). */
  changeLogAt: number;
}

export interface StoredCheckpoint {
  id: string;
  name: string;
  jobId: string;
  kind: 'production' | 'standard';
  consistency: 'application' | 'crash';
  consistencyReason?: string;
  createdAt: string;
  disks: StoredCheckpointDisk[];
}

export interface StoredReferencePoint {
  id: string;
  createdAt: string;
  disks: Record<string, string>;
}

export interface VmState {
  disks: Record<string, { chain: string[]; trackingId: string }>;
  checkpoints: StoredCheckpoint[];
  referencePoints: StoredReferencePoint[];
}

export function emptyState(): VmState {
  return { disks: {}, checkpoints: [], referencePoints: [] };
}

export function newTrackingId(): string {
  return randomUUID();
}

function toStored(paths: LabPaths, p: string): string {
  const rel = relative(paths.dir, p);
  return rel.startsWith('..') || isAbsolute(rel) ? p : rel;
}

function fromStored(paths: LabPaths, p: string): string {
  return isAbsolute(p) ? p : resolve(paths.dir, p);
}

function mapPaths(state: VmState, f: (p: string) => string): VmState {
  return {
    disks: Object.fromEntries(Object.entries(state.disks).map(([id, d]) => [id, { ...d, chain: d.chain.map(f) }])),
    checkpoints: state.checkpoints.map((c) => ({ ...c, disks: c.disks.map((d) => ({ ...d, avhdx: f(d.avhdx), chain: d.chain.map(f) })) })),
    referencePoints: state.referencePoints,
  };
}

/** Load a VM's state with absolute paths. */
export async function loadVmState(paths: LabPaths, vmId: string): Promise<VmState> {
  const stored = await readJson<VmState>(paths.vmStateFile(vmId), emptyState());
  return mapPaths({ ...emptyState(), ...stored }, (p) => fromStored(paths, p));
}

export async function saveVmState(paths: LabPaths, vmId: string, state: VmState): Promise<void> {
  await writeAtomic(paths.vmStateFile(vmId), JSON.stringify(mapPaths(state, (p) => toStored(paths, p)), null, 2) + '\n');
}
