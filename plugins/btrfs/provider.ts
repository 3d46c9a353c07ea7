import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, access } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, resolve } from 'node:path';
import createDebug from 'debug';
import type { PresentedSnapshot, VolumeRef, VolumeSnapshot, VolumeSnapshotProvider } from '../../core/contracts/snapshot.ts';
import { NotFoundError, StillpointError } from '../../core/errors.ts';
import { writeDurably } from '../../core/util/durable.ts';
import { isSubvolume, runBtrfs, whyNotSubvolumeSync } from './btrfs.ts';
import { formatSnapshotName, parseSnapshotName } from './naming.ts';

const debug = createDebug('stillpoint:btrfs');

export const DEFAULT_SNAPSHOT_DIR_NAME = '.stillpoint-snapshots';

export interface BtrfsProviderOptions {
  /** Where snapshots go (absolute, on the same btrfs filesystem); default `<volume>/.stillpoint-snapshots`. */
  snapshotDir?: string;
  /** The btrfs-progs program. */
  program: string;
  /** Volumes `list()` scans besides those this provider has snapshotted before. */
  volumes: VolumeRef[];
  /** Per proxy name: the directory where that proxy sees this host's `/` (absent: the proxy runs here). */
  proxyRoots: Record<string, string>;
  /**
   * Where the provider remembers the volumes it snapshotted (for `list()` after a crash): one file
   * per volume in the directory `<stateFile>.d`, so that processes sharing it never rewrite each
   * other's entries; `<stateFile>` itself (the single file of earlier versions) is still read.
   */
  stateFile?: string;
}

async function exists(path: string): Promise<boolean> {
  try { await access(path); return true; } catch { return false; }
}

/**
 * Read-only btrfs subvolume snapshots (`btrfs subvolume snapshot -r`) of volumes that are btrfs
 * subvolumes. Snapshots are named `stillpoint@<job>@<volume>@<time>@<nonce>` (see naming.ts) so that
 * `list()` and the journal's reconcile recognise them; the snapshot's `id` is its absolute path.
 */
export class BtrfsSnapshotProvider implements VolumeSnapshotProvider {
  readonly name = 'btrfs';
  readonly #options: BtrfsProviderOptions;

  constructor(options: Partial<BtrfsProviderOptions> = {}) {
    this.#options = { program: 'btrfs', volumes: [], proxyRoots: {}, ...options };
  }

  /** Why this provider cannot snapshot `volume`, or `undefined` when it can (synchronous, for the hook). */
  whyNot(volume: VolumeRef): string | undefined {
    return whyNotSubvolumeSync(resolve(volume.path));
  }

  async serves(volume: VolumeRef): Promise<boolean> {
    return isSubvolume(resolve(volume.path));
  }

  snapshotDirFor(volume: VolumeRef): string {
    return this.#options.snapshotDir ? resolve(this.#options.snapshotDir) : join(resolve(volume.path), DEFAULT_SNAPSHOT_DIR_NAME);
  }

  async create(volume: VolumeRef, options: { jobId: string }): Promise<VolumeSnapshot> {
    const volumePath = resolve(volume.path);
    const why = whyNotSubvolumeSync(volumePath);
    if (why) {
      throw new StillpointError(`cannot take a btrfs snapshot of volume "${volume.name}": ${why}`, {
        where: `volume ${volume.name}`,
        hint: 'a btrfs volume snapshot needs the volume to be a btrfs subvolume (btrfs subvolume create); use another snapshot provider or mode onHost',
      });
    }
    const dir = this.snapshotDirFor(volume);
    await this.#ensureSnapshotDir(volume, dir);
    await this.#remember(volume);
    const createdAt = new Date().toISOString();
    const name = formatSnapshotName({ jobId: options.jobId, volume: volume.name, createdAt, nonce: randomBytes(4).toString('hex') });
    const path = join(dir, name);
    await runBtrfs(this.#options.program, ['subvolume', 'snapshot', '-r', volumePath, path]);
    debug('created %s of volume %s for job %s', path, volume.name, options.jobId);
    return { id: path, provider: this.name, volume: { name: volume.name, path: volumePath }, path, createdAt, jobId: options.jobId };
  }

  async present(snapshot: VolumeSnapshot, proxy: string): Promise<PresentedSnapshot> {
    const path = this.#pathOf(snapshot);
    if (!(await isSubvolume(path))) {
      throw new NotFoundError(`btrfs snapshot ${path} does not exist (or is not a subvolume)`, {
        where: `volume ${snapshot.volume.name}`,
        hint: 'it was deleted before it could be presented to the proxy; run the job again',
      });
    }
    const volumePath = resolve(snapshot.volume.path);
    const root = this.#options.proxyRoots[proxy];
    let presented = true;
    debug('presented %s to proxy %s%s', path, proxy, root ? ` under ${root}` : ' (same host)');
    return {
      snapshot,
      proxy,
      mapPath(hostPath: string): string {
        if (!presented) throw new StillpointError(`snapshot ${path} is no longer presented to proxy "${proxy}"`);
        const rel = relative(volumePath, resolve(hostPath));
        if (rel.startsWith('..') || isAbsolute(rel)) {
          throw new StillpointError(`${hostPath} is not on volume "${snapshot.volume.name}" (${volumePath})`, {
            where: `volume ${snapshot.volume.name}`,
            hint: "the driver's volume for this disk is wrong, or the disk's chain spans volumes; off-host backup reads each chain from one volume snapshot",
          });
        }
        const inSnapshot = join(path, rel);
        return root ? join(root, inSnapshot) : inSnapshot;
      },
      async unpresent(): Promise<void> {
        // A local path mapping (or a proxy that sees this host's filesystem under `root`) holds
        // nothing to undo on the host; after this, mapPath refuses.
        presented = false;
      },
    };
  }

  async delete(snapshot: VolumeSnapshot): Promise<void> {
    const path = this.#pathOf(snapshot);
    if (!(await exists(path))) {
      debug('delete %s: already gone', path);
      return;
    }
    if (!(await isSubvolume(path))) {
      throw new StillpointError(`${path} exists but is not a btrfs subvolume; refusing to delete it`, {
        where: `volume ${snapshot.volume.name}`,
        hint: 'something else took the snapshot\'s place; remove it by hand if it is not needed',
      });
    }
    try {
      await runBtrfs(this.#options.program, ['subvolume', 'delete', path]);
    } catch (error) {
      if (!(await exists(path))) return; // deleted concurrently
      throw error;
    }
    debug('deleted %s', path);
  }

  async list(volume?: VolumeRef): Promise<VolumeSnapshot[]> {
    const volumes = volume ? [volume] : await this.#knownVolumes();
    const found: VolumeSnapshot[] = [];
    const seen = new Set<string>();
    for (const vol of volumes) {
      const dir = this.snapshotDirFor(vol);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw error;
      }
      for (const name of names) {
        const parts = parseSnapshotName(name);
        const path = join(dir, name);
        if (!parts || parts.volume !== vol.name || seen.has(path) || !(await isSubvolume(path))) continue;
        seen.add(path);
        found.push({ id: path, provider: this.name, volume: { name: vol.name, path: resolve(vol.path) }, path, createdAt: parts.createdAt, jobId: parts.jobId });
      }
    }
    return found;
  }

  #pathOf(snapshot: VolumeSnapshot): string {
    const path = resolve(snapshot.path ?? snapshot.id);
    if (!parseSnapshotName(basename(path))) {
      throw new StillpointError(`"${path}" is not the path of a Stillpoint btrfs snapshot`, {
        where: `volume ${snapshot.volume.name}`,
        hint: 'only snapshots named stillpoint@<job>@<volume>@<time>@<nonce> are handled by this provider',
      });
    }
    return path;
  }

  async #ensureSnapshotDir(volume: VolumeRef, dir: string): Promise<void> {
    if (await exists(dir)) return;
    if (this.#options.snapshotDir) {
      await mkdir(dir, { recursive: true });
    } else {
      // Inside the volume, the snapshot directory is a subvolume of its own, so that a snapshot of
      // the volume does not contain (empty stubs of) earlier snapshots' directory tree.
      try {
        await runBtrfs(this.#options.program, ['subvolume', 'create', dir]);
      } catch (error) {
        if (!(await exists(dir))) {
          throw new StillpointError(`cannot create the snapshot directory ${dir}`, { where: `volume ${volume.name}`, cause: error });
        }
      }
    }
  }

  async #knownVolumes(): Promise<VolumeRef[]> {
    const byName = new Map<string, VolumeRef>();
    for (const v of this.#options.volumes) byName.set(v.name, v);
    for (const v of await this.#readState()) if (!byName.has(v.name)) byName.set(v.name, v);
    return [...byName.values()];
  }

  /** The volumes remembered: the per-volume files, then the single file of earlier versions. */
  async #readState(): Promise<VolumeRef[]> {
    const file = this.#options.stateFile;
    if (!file) return [];
    const found: VolumeRef[] = [];
    const valid = (v: unknown): v is VolumeRef => typeof (v as VolumeRef)?.name === 'string' && typeof (v as VolumeRef)?.path === 'string';
    const read = async (path: string): Promise<unknown> => {
      try {
        return JSON.parse(await readFile(path, 'utf8'));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null; // forgotten meanwhile
        throw new StillpointError(`cannot read the btrfs provider's state: ${(error as Error).message}`, {
          where: path,
          hint: 'fix or delete the file; it only remembers a volume snapshotted before',
        });
      }
    };
    let names: string[] = [];
    try {
      names = (await readdir(`${file}.d`)).filter((n) => n.endsWith('.json')).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    for (const name of names) {
      const v = await read(join(`${file}.d`, name));
      if (valid(v)) found.push({ name: v.name, path: v.path });
    }
    const legacy = (await read(file)) as { volumes?: unknown[] } | null;
    if (legacy && Array.isArray(legacy.volumes)) for (const v of legacy.volumes) if (valid(v)) found.push({ name: v.name, path: v.path });
    return found;
  }

  /**
   * Remember `volume`: its own file `<stateFile>.d/<name, hex>.json`, written durably (a temporary
   * file of its own, fsync, rename), since it is read after a crash. Snapshots of several volumes
   * are taken at once, in this process or in another one using the same state directory: no
   * update reads or rewrites another's file.
   */
  async #remember(volume: VolumeRef): Promise<void> {
    const file = this.#options.stateFile;
    if (!file) return;
    const dir = `${file}.d`;
    const name = `${Buffer.from(volume.name, 'utf8').toString('hex')}.json`;
    const entry = { name: volume.name, path: resolve(volume.path) };
    const current = await readFile(join(dir, name), 'utf8').then((s) => JSON.parse(s) as unknown, () => null);
    if (current && (current as VolumeRef).name === entry.name && (current as VolumeRef).path === entry.path) return;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeDurably(dir, name, JSON.stringify(entry) + '\n');
  }
}
