/**
 * "lab-snapshot": the volume-snapshot provider for lab volumes (the off-host path).
 * - A volume that is a btrfs subvolume gets a real read-only btrfs snapshot (through the btrfs
 *   plugin's provider).
 * - Any other volume gets a snapshot the lab makes itself: a copy of the volume directory
 *   (reflinked where the filesystem can), in `<lab>/snapshots/stillpoint-lab-copy-snapshot@...`,
 *   with a `.json` beside it saying what it is. The volume's base disks are frozen by the
 *   checkpoints when the snapshot is taken, so the copy holds them as they were.
 * Every step is recorded in the lab's event trace.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { PresentedSnapshot, VolumeRef, VolumeSnapshot, VolumeSnapshotProvider } from '../../core/contracts/snapshot.ts';
import { NotFoundError, StillpointError } from '../../core/errors.ts';
import { isSubvolume } from '../btrfs/btrfs.ts';
import { BtrfsSnapshotProvider } from '../btrfs/provider.ts';
import { exists } from './disks.ts';
import type { EventTrace } from './trace.ts';

const run = promisify(execFile);
export const COPY_SNAPSHOT_PREFIX = 'stillpoint-lab-copy-snapshot@';

/** A lab volume the provider serves, with the lab it belongs to. */
export interface LabVolume {
  name: string;
  path: string;
  snapshotsDir: string;
  trace: EventTrace;
}

interface CopyMeta { kind: 'lab-copy-snapshot'; volume: VolumeRef; jobId: string; createdAt: string }

export class LabSnapshotProvider implements VolumeSnapshotProvider {
  readonly name = 'lab-snapshot';
  readonly #volumes: () => LabVolume[];
  readonly #btrfs = new BtrfsSnapshotProvider();

  /** `volumes` lists the lab volumes currently known (every open lab driver's). */
  constructor(volumes: () => LabVolume[]) {
    this.#volumes = volumes;
  }

  /** The lab volume a ref names (by name or directory), if any. */
  find(volume: VolumeRef): LabVolume | undefined {
    const all = this.#volumes();
    return all.find((v) => resolve(v.path) === resolve(volume.path)) ?? all.find((v) => v.path === volume.name || v.name === volume.name);
  }

  #lab(volume: VolumeRef): LabVolume {
    const v = this.find(volume);
    if (!v) throw new NotFoundError(`volume ${volume.name} is not a lab volume`, { where: `provider ${this.name}`, hint: 'use a snapshot provider for that volume (e.g. "btrfs")' });
    return v;
  }

  async serves(volume: VolumeRef): Promise<boolean> {
    return !!this.find(volume);
  }

  async create(ref: VolumeRef, options: { jobId: string }): Promise<VolumeSnapshot> {
    const volume = this.#lab(ref);
    const volumeRef = { name: volume.name, path: volume.path };
    let snapshot: VolumeSnapshot;
    if (await isSubvolume(volume.path)) {
      const s = await this.#btrfs.create(volumeRef, options);
      snapshot = { ...s, provider: this.name };
      volume.trace.record('volume-snapshot-created', { volume: volume.name, snapshot: s.id, detail: 'btrfs read-only subvolume snapshot' });
      return snapshot;
    }
    const createdAt = new Date().toISOString();
    const name = `${COPY_SNAPSHOT_PREFIX}${volume.name}@${createdAt.replace(/[:.]/g, '-')}@${randomBytes(3).toString('hex')}`;
    const path = join(volume.snapshotsDir, name);
    await mkdir(path, { recursive: true });
    const meta: CopyMeta = { kind: 'lab-copy-snapshot', volume: volumeRef, jobId: options.jobId, createdAt };
    await writeFile(`${path}.json`, JSON.stringify(meta, null, 2) + '\n');
    try {
      await run('cp', ['-a', '--reflink=auto', '--sparse=always', `${volume.path}/.`, path]);
    } catch (error) {
      await rm(path, { recursive: true, force: true });
      await rm(`${path}.json`, { force: true });
      throw new StillpointError(`copying volume ${volume.name} into a lab snapshot failed: ${(error as { stderr?: string }).stderr || (error as Error).message}`, { where: volume.path });
    }
    volume.trace.record('volume-snapshot-created', { volume: volume.name, snapshot: path, detail: 'lab copy snapshot (the volume is not a btrfs subvolume)' });
    return { id: path, provider: this.name, volume: volumeRef, path, createdAt, jobId: options.jobId };
  }

  async present(snapshot: VolumeSnapshot, proxy: string): Promise<PresentedSnapshot> {
    const volume = this.#lab(snapshot.volume);
    const path = resolve(snapshot.path ?? snapshot.id);
    if (!(await exists(path))) throw new NotFoundError(`lab snapshot ${path} does not exist`, { where: `volume ${volume.name}`, hint: 'it was deleted before it was presented; run the job again' });
    volume.trace.record('volume-snapshot-presented', { volume: volume.name, snapshot: snapshot.id, detail: `to proxy ${proxy}` });
    let presented = true;
    return {
      snapshot,
      proxy,
      mapPath(hostPath: string): string {
        if (!presented) throw new StillpointError(`snapshot ${path} is no longer presented to proxy "${proxy}"`);
        const rel = relative(resolve(volume.path), resolve(hostPath));
        if (rel.startsWith('..') || isAbsolute(rel)) throw new StillpointError(`${hostPath} is not on volume ${volume.name} (${volume.path})`, { where: `volume ${volume.name}` });
        return join(path, rel);
      },
      async unpresent(): Promise<void> {
        if (!presented) return;
        presented = false;
        volume.trace.record('volume-snapshot-unpresented', { volume: volume.name, snapshot: snapshot.id, detail: `from proxy ${proxy}` });
      },
    };
  }

  async delete(snapshot: VolumeSnapshot): Promise<void> {
    const volume = this.find(snapshot.volume);
    const path = resolve(snapshot.path ?? snapshot.id);
    if (await isSubvolume(path)) {
      await this.#btrfs.delete({ ...snapshot, provider: 'btrfs' });
    } else {
      if (!path.split('/').pop()!.startsWith(COPY_SNAPSHOT_PREFIX)) {
        throw new StillpointError(`"${path}" is not a lab snapshot; refusing to delete it`, { where: `provider ${this.name}` });
      }
      if (!(await exists(path)) && !(await exists(`${path}.json`))) return;
      await rm(path, { recursive: true, force: true });
      await rm(`${path}.json`, { force: true });
    }
    volume?.trace.record('volume-snapshot-deleted', { volume: volume.name, snapshot: snapshot.id });
  }

  async list(ref?: VolumeRef): Promise<VolumeSnapshot[]> {
    const volumes = ref ? [this.#lab(ref)] : this.#volumes();
    const found: VolumeSnapshot[] = [];
    const dirs = new Set(volumes.map((v) => v.snapshotsDir));
    for (const dir of dirs) {
      let names: string[];
      try { names = await readdir(dir); } catch { continue; }
      for (const name of names.filter((n) => n.startsWith(COPY_SNAPSHOT_PREFIX) && n.endsWith('.json'))) {
        const path = join(dir, name.slice(0, -'.json'.length));
        let meta: CopyMeta;
        try { meta = JSON.parse(await readFile(join(dir, name), 'utf8')) as CopyMeta; } catch { continue; }
        if (!volumes.some((v) => v.name === meta.volume.name)) continue;
        found.push({ id: path, provider: this.name, volume: meta.volume, path, createdAt: meta.createdAt, jobId: meta.jobId });
      }
    }
    for (const v of volumes) {
      if (!(await isSubvolume(v.path))) continue;
      for (const s of await this.#btrfs.list({ name: v.name, path: v.path })) found.push({ ...s, provider: this.name });
    }
    return found;
  }
}
