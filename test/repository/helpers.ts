import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalStorage } from '../../plugins/local/storage.ts';
import { openRepository, RawFileDisk, repositoryConfigSchema, type OpenRepositoryOptions, type Repository, type RestorePointMeta } from '../../core/repository/index.ts';

export const MiB = 2 ** 20;

export interface Fixture {
  dir: string;
  storage: LocalStorage;
  open(options?: OpenRepositoryOptions & { chunkSize?: number; chunkHash?: 'blake3' | 'sha256' }): Promise<Repository>;
  cleanup(): Promise<void>;
}

export async function fixture(): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-repo-'));
  const storage = new LocalStorage(join(dir, 'repo'));
  const opened: Repository[] = [];
  return {
    dir,
    storage,
    async open(options = {}) {
      const config = repositoryConfigSchema.parse({ storage: { type: 'local', options: { path: join(dir, 'repo') } }, chunkSize: options.chunkSize ?? 64 * 1024, chunkHash: options.chunkHash });
      const repo = await openRepository(storage, config, { create: true, scrypt: { N: 1024, r: 8, p: 1 }, workers: 2, ...options });
      opened.push(repo);
      return repo;
    },
    async cleanup() {
      for (const r of opened) await r.data.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A disk image with random data, text and zero regions (chunk-size independent). */
export function mixedImage(size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let off = 0; off < size; off += 256 * 1024) {
    const kind = (off / (256 * 1024)) % 4;
    const len = Math.min(256 * 1024, size - off);
    if (kind === 0) randomBytes(len).copy(buf, off);
    else if (kind === 1) buf.write(`text block at ${off} `.repeat(Math.ceil(len / 20)).slice(0, len), off, 'utf8');
    else if (kind === 2) randomBytes(len / 2).copy(buf, off + len / 4);
    // kind 3: zeros
  }
  return buf;
}

export async function writeImage(dir: string, name: string, data: Buffer): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, data);
  return path;
}

export function meta(vm = 'vm-1', time = new Date(), job = 'nightly'): RestorePointMeta {
  return {
    job,
    vm: { id: vm, name: `VM ${vm}`, driver: 'lab', configuration: { generation: 2, memoryMiB: 1024 } },
    consistency: { method: 'online', level: 'application', reason: 'production checkpoint; guest quiesced by VSS' },
    time: time.toISOString(),
  };
}

/** Overwrite `count` scattered regions of `length` bytes with random data; returns the ranges. */
export function scatterChanges(buf: Buffer, count: number, length: number, seed = 1): Array<{ offset: number; length: number }> {
  const ranges = [];
  let x = seed;
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const offset = x % (buf.length - length);
    randomBytes(length).copy(buf, offset);
    ranges.push({ offset, length });
  }
  return ranges;
}

/** Back up the raw image at `path` as one disk of a new restore point and commit it. */
export async function backup(repo: Repository, path: string, opts: { vm?: string; time?: Date; changed?: Array<{ offset: number; length: number }> | null; disk?: string } = {}) {
  const writer = await repo.startRestorePoint(meta(opts.vm, opts.time));
  const source = await RawFileDisk.open(path);
  try {
    const result = await writer.storeDisk({ id: opts.disk ?? 'scsi0-0', virtualSize: source.virtualSize, logicalSectorSize: 512 }, source, { changed: opts.changed });
    const { id } = await writer.commit();
    return { id, result };
  } finally {
    await source.close();
  }
}
