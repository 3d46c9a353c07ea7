/**
 * The lab's disk files, through the native VHDX library: base disks (dynamic VHDX formatted for
 * the guest workload), AVHDX files (`<disk>_<GUID>.avhdx` beside the disk, as Hyper-V names them),
 * and merges.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, stat, unlink } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { createDifferencing, createDynamic, mergeIntoParent, VhdxDisk } from '../vhdx/index.ts';
import { encodeSuperblock, layoutFor } from './guest/format.ts';
import { verifyDisk, type Verdict } from './verifier.ts';

export const DEFAULT_BLOCK_SIZE = 1024 * 1024;

export async function exists(path: string): Promise<boolean> {
  try { await stat(path); return true; } catch { return false; }
}

/** Create a dynamic VHDX and write the workload's superblock on it. */
export async function createBaseDisk(path: string, options: { virtualSize: number; blockSize?: number; vmId: string; diskId: string; dataPages?: number }): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await createDynamic(path, { virtualSize: options.virtualSize, blockSize: options.blockSize ?? DEFAULT_BLOCK_SIZE });
  const disk = await VhdxDisk.open(path, { writable: true });
  try {
    await disk.write(0, encodeSuperblock(layoutFor(options.virtualSize, options.vmId, options.diskId, { dataPages: options.dataPages })));
    await disk.flush();
  } finally {
    await disk.close();
  }
}

/** The AVHDX name Hyper-V gives a checkpoint's differencing disk: `<base disk name>_<GUID>.avhdx`. */
export function avhdxPathFor(baseDisk: string, top: string): string {
  const stem = basename(baseDisk, extname(baseDisk));
  return join(dirname(top), `${stem}_${randomUUID().toUpperCase()}.avhdx`);
}

/** Create the AVHDX over `top` (the current top of the chain). */
export async function createAvhdx(avhdx: string, top: string): Promise<void> {
  await createDifferencing(avhdx, top);
}

/** Fold `avhdx` into its parent and delete it. */
export async function mergeAvhdx(avhdx: string): Promise<void> {
  await mergeIntoParent(avhdx);
  await unlink(avhdx);
}

/** Verify the workload's data in a VHDX chain (top first). */
export async function verifyVhdx(path: string, parentPaths?: string[]): Promise<Verdict> {
  const disk = await VhdxDisk.open(path, parentPaths ? { parentPaths } : {});
  try {
    return await verifyDisk(disk, path);
  } finally {
    await disk.close();
  }
}
