import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import createDebug from 'debug';
import { ConfigError, NotFoundError, StillpointError } from '../errors.ts';
import { openDirectFile, RunWriter } from '../util/direct-io.ts';
import type { DiskRecord, Manifest } from './format.ts';
import type { Repository } from './repository.ts';

const debug = createDebug('stillpoint:repository');

export interface RestoreProgress {
  /** Which disk. */
  disk: string;
  bytesDone: number;
  bytesTotal: number;
}

export type RestoreFormat = 'raw' | 'vhdx';

export interface RestoreDiskOptions {
  format?: RestoreFormat;
  /** Replace an existing file (default: refuse). */
  overwrite?: boolean;
  onProgress?: (p: RestoreProgress) => void;
}

/** The sink a restore writes chunks into. */
interface DiskSink {
  /** Resolves once `data` may be reused (written, or copied to be written). */
  write(offset: number, data: Buffer): Promise<void>;
  finish(): Promise<void>;
  discard(): Promise<void>;
}

function findDisk(manifest: Manifest, diskId: string): DiskRecord {
  const disk = manifest.disks.find((d) => d.id === diskId);
  if (!disk) {
    throw new NotFoundError(`restore point ${manifest.id} of VM ${manifest.vm.name} has no disk ${JSON.stringify(diskId)}`, {
      hint: `its disks are: ${manifest.disks.map((d) => d.id).join(', ') || '(none)'}`,
    });
  }
  return disk;
}

/**
 * A raw image, written to `<path>.partial`, fsynced and renamed when complete; zero chunks stay
 * holes. Written around the page cache where the filesystem allows it (core/util/direct-io.ts):
 * a restored disk is gigabytes that nobody reads back at once.
 */
async function rawSink(path: string, size: number, overwrite: boolean): Promise<DiskSink> {
  const partial = `${path}.partial`;
  if (!overwrite) {
    const exists = await open(path, 'r').then((h) => h.close().then(() => true), () => false);
    if (exists) throw new StillpointError('the target file exists', { where: path, hint: 'choose another path or pass --overwrite' });
  }
  // Written in order; zero chunks are skipped (holes), and the size is set at the end. (Filling
  // a file pre-sized with truncate costs ext4 much more kernel time: every write splits a hole.)
  const direct = await openDirectFile(partial, { mode: 0o600 });
  const file = direct ?? (await open(partial, 'w', 0o600));
  const runs = direct ? new RunWriter(direct) : null;
  return {
    async write(offset, data) {
      if (runs) return runs.write(offset, data);
      let done = 0;
      while (done < data.length) done += (await (file as FileHandle).write(data, done, data.length - done, offset + done)).bytesWritten;
    },
    async finish() {
      await runs?.drain();
      await file.truncate(size);
      await file.sync();
      await file.close();
      await rename(partial, path);
    },
    async discard() {
      await runs?.drain().catch(() => undefined);
      await file.close().catch(() => undefined);
      await rm(partial, { force: true });
    },
  };
}

interface VhdxLibrary {
  createDynamic(path: string, options: { virtualSize: number; logicalSectorSize: 512 | 4096 }): Promise<unknown> | unknown;
  VhdxDisk: {
    open(path: string, options: { writable: boolean }): Promise<{
      write(offset: number, data: Buffer): Promise<unknown> | unknown;
      flush?(): Promise<unknown> | unknown;
      close(): Promise<unknown> | unknown;
    }>;
  };
}

async function loadVhdx(): Promise<VhdxLibrary> {
  const spec = new URL('../../plugins/vhdx/index.ts', import.meta.url).href;
  try {
    return (await import(spec)) as VhdxLibrary;
  } catch (cause) {
    throw new StillpointError('restoring to VHDX needs the VHDX library (plugins/vhdx), which could not be loaded', {
      hint: 'restore to a raw image instead (--format raw), or build the native library with `npm run build:native`',
      cause,
    });
  }
}

/** A new dynamic VHDX, written to `<path>.partial` and renamed when complete; zero chunks are not written. */
async function vhdxSink(path: string, record: DiskRecord, overwrite: boolean): Promise<DiskSink> {
  const lib = await loadVhdx();
  if (!overwrite) {
    const exists = await open(path, 'r').then((h) => h.close().then(() => true), () => false);
    if (exists) throw new StillpointError('the target file exists', { where: path, hint: 'choose another path or pass --overwrite' });
  }
  const partial = `${path}.partial`;
  await rm(partial, { force: true });
  if (record.logicalSectorSize !== 512 && record.logicalSectorSize !== 4096) {
    throw new StillpointError(`a VHDX cannot have ${record.logicalSectorSize}-byte logical sectors`, { where: `disk ${record.id}`, hint: 'restore to a raw image instead (--format raw)' });
  }
  await lib.createDynamic(partial, { virtualSize: record.virtualSize, logicalSectorSize: record.logicalSectorSize });
  const disk = await lib.VhdxDisk.open(partial, { writable: true });
  return {
    async write(offset, data) {
      await disk.write(offset, data);
    },
    async finish() {
      await disk.flush?.();
      await disk.close();
      await rename(partial, path);
    },
    async discard() {
      await Promise.resolve(disk.close()).catch(() => undefined);
      await rm(partial, { force: true });
    },
  };
}

/** Restore one disk of a restore point to a raw image or a dynamic VHDX. */
export async function restoreDisk(repo: Repository, manifest: Manifest, diskId: string, path: string, options: RestoreDiskOptions = {}): Promise<{ bytes: number }> {
  const record = findDisk(manifest, diskId);
  // The table's first page is read (and checked) before the target file is made.
  const table = repo.data.tableReader(record);
  await table.page(0);
  const format = options.format ?? (path.toLowerCase().endsWith('.vhdx') ? 'vhdx' : 'raw');
  const sink = format === 'vhdx' ? await vhdxSink(path, record, !!options.overwrite) : await rawSink(path, record.virtualSize, !!options.overwrite);
  let done = 0;
  try {
    await repo.data.forEachChunk(record, table, { from: 0, to: record.virtualSize }, async (chunk) => {
      if (chunk.data) {
        // Awaited: the chunk's data is reused once this returns (the sink copies what it keeps).
        await sink.write(chunk.offset, chunk.data);
        repo.data.recycle(chunk.data);
      }
      done += chunk.length;
      options.onProgress?.({ disk: diskId, bytesDone: done, bytesTotal: record.virtualSize });
    });
    await sink.finish();
  } catch (error) {
    await sink.discard();
    if (error instanceof StillpointError && !error.where) {
      throw new StillpointError(error.message, { where: `restore point ${manifest.id}, disk ${diskId}`, cause: error });
    }
    throw error;
  }
  debug('restored disk %s of %s to %s (%s)', diskId, manifest.id, path, format);
  return { bytes: record.virtualSize };
}

/** File name of a restored disk in a folder: the disk id with unsafe characters replaced. */
export function restoredDiskFileName(diskId: string, format: RestoreFormat): string {
  return `${diskId.replace(/[^A-Za-z0-9._-]+/g, '_')}.${format === 'vhdx' ? 'vhdx' : 'img'}`;
}

/** Restore every disk of a restore point into `folder`. */
export async function restoreVm(repo: Repository, manifest: Manifest, folder: string, options: RestoreDiskOptions = {}): Promise<Array<{ disk: string; path: string }>> {
  await mkdir(folder, { recursive: true });
  const format = options.format ?? 'raw';
  const out: Array<{ disk: string; path: string }> = [];
  for (const disk of manifest.disks) {
    const path = join(folder, restoredDiskFileName(disk.id, format));
    await restoreDisk(repo, manifest, disk.id, path, { ...options, format });
    out.push({ disk: disk.id, path });
  }
  return out;
}

/** Write bytes [offset, offset + length) of a disk to a stream (e.g. stdout), honouring back-pressure. */
export async function restoreRange(
  repo: Repository,
  manifest: Manifest,
  diskId: string,
  range: { offset: number; length?: number },
  out: Writable,
  options: { onProgress?: (p: RestoreProgress) => void } = {},
): Promise<{ bytes: number }> {
  const record = findDisk(manifest, diskId);
  const from = range.offset;
  const to = range.length === undefined ? record.virtualSize : from + range.length;
  if (from < 0 || to > record.virtualSize || to < from) {
    throw new ConfigError([`range ${from}..${to} is outside disk ${diskId} (${record.virtualSize} bytes)`]);
  }
  const table = repo.data.tableReader(record);
  if (to > from) await table.ensure(Math.floor(from / record.chunkSize));
  let done = 0;
  await repo.data.forEachChunk(record, table, { from, to }, async (chunk) => {
    const s = Math.max(from, chunk.offset);
    const e = Math.min(to, chunk.offset + chunk.length);
    if (e <= s) return;
    // A copy: the stream may hold on to what it is given, and chunk data is reused once this returns.
    const piece = chunk.data ? Buffer.from(chunk.data.subarray(s - chunk.offset, e - chunk.offset)) : Buffer.alloc(e - s);
    if (!out.write(piece)) {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error) => { out.off('drain', onDrain); reject(err); };
        const onDrain = () => { out.off('error', onError); resolve(); };
        out.once('drain', onDrain);
        out.once('error', onError);
      });
    }
    done += e - s;
    options.onProgress?.({ disk: diskId, bytesDone: done, bytesTotal: to - from });
  });
  return { bytes: done };
}
