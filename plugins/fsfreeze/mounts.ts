/**
 * Mount tables and the choice of which filesystems to freeze.
 *
 * The table is `/proc/self/mountinfo` (read locally, over SSH, or — for the guest agent — built
 * from `guest-get-fsinfo`). A filesystem is identified by its superblock (`major:minor` of the
 * mountinfo line): a filesystem mounted twice, or a btrfs mounted once per subvolume, is frozen
 * once, through its first mount point.
 */
import { StillpointError } from '../../core/errors.ts';

export interface MountEntry {
  /** Mount point, unescaped. */
  mountPoint: string;
  /** `major:minor` of the superblock (one per filesystem). */
  device: string;
  fsType: string;
  /** Mount source, e.g. `/dev/sda1`. */
  source: string;
  readOnly: boolean;
}

/** One filesystem to freeze. */
export interface FreezeTarget {
  /** The mount point the freeze and thaw go through. */
  mountPoint: string;
  device: string;
  fsType: string;
  source: string;
  /** Other mount points of the same filesystem (frozen with it). */
  alsoMountedAt: string[];
}

/** `\040` style escapes of mountinfo and /proc/mounts. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Parse `/proc/self/mountinfo` text. Lines that do not parse are reported with their number. */
export function parseMountInfo(text: string, where = '/proc/self/mountinfo'): MountEntry[] {
  const entries: MountEntry[] = [];
  const lines = text.split('\n');
  lines.forEach((line, index) => {
    if (line.trim() === '') return;
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    if (fields.length < 10 || separator < 0 || fields.length < separator + 3) {
      throw new StillpointError(`line ${index + 1} is not a mountinfo line: ${JSON.stringify(line)}`, { where });
    }
    const mountOptions = fields[5].split(',');
    const superOptions = (fields[separator + 3] ?? '').split(',');
    entries.push({
      device: fields[2],
      mountPoint: unescapeMountField(fields[4]),
      fsType: fields[separator + 1],
      source: unescapeMountField(fields[separator + 2]),
      readOnly: mountOptions.includes('ro') || superOptions.includes('ro'),
    });
  });
  return entries;
}

/** Drop a trailing slash (but keep "/"). */
export function normalizeMountPoint(path: string): string {
  return path.length > 1 ? path.replace(/\/+$/, '') : path;
}

/** The entry that is visible at `mountPoint` (the last one mounted there), if any. */
export function findMount(entries: MountEntry[], mountPoint: string): MountEntry | undefined {
  const wanted = normalizeMountPoint(mountPoint);
  return entries.findLast((entry) => entry.mountPoint === wanted);
}

/** The mount that holds `path` (an absolute, already resolved path): the longest mount-point prefix. */
export function mountContaining(entries: MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const entry of entries) {
    const prefix = entry.mountPoint === '/' ? '/' : `${entry.mountPoint}/`;
    if (path === entry.mountPoint || path.startsWith(prefix)) {
      if (!best || entry.mountPoint.length >= best.mountPoint.length) best = entry;
    }
  }
  return best;
}

/** Group mount points by filesystem, keeping the order of `chosen`; "/" (when chosen) goes last. */
function toTargets(chosen: MountEntry[]): FreezeTarget[] {
  const byDevice = new Map<string, FreezeTarget>();
  for (const entry of chosen) {
    const existing = byDevice.get(entry.device);
    if (existing) {
      if (entry.mountPoint === '/') {
        // Freeze the root filesystem through "/" itself.
        existing.alsoMountedAt.push(existing.mountPoint);
        existing.mountPoint = '/';
      } else if (entry.mountPoint !== existing.mountPoint && !existing.alsoMountedAt.includes(entry.mountPoint)) {
        existing.alsoMountedAt.push(entry.mountPoint);
      }
      continue;
    }
    byDevice.set(entry.device, {
      mountPoint: entry.mountPoint,
      device: entry.device,
      fsType: entry.fsType,
      source: entry.source,
      alsoMountedAt: [],
    });
  }
  const targets = [...byDevice.values()];
  const rootIndex = targets.findIndex((target) => target.mountPoint === '/');
  if (rootIndex >= 0) targets.push(...targets.splice(rootIndex, 1));
  return targets;
}

/**
 * What hv_vss_daemon (the Hyper-V VSS daemon in Linux) freezes: every writable filesystem whose
 * source is a block device under /dev/, except loop devices (their backing file may live on a
 * filesystem frozen before them) and vfat; the root filesystem last.
 *
 * @param loopDevices `major:minor` of loop block devices (from /sys/dev/block/<dev>/loop).
 */
export function selectLikeVssDaemon(entries: MountEntry[], loopDevices: ReadonlySet<string>): FreezeTarget[] {
  const chosen = entries.filter(
    (entry) =>
      entry.source.startsWith('/dev/') &&
      !/^\/dev\/loop\d+$/.test(entry.source) &&
      !loopDevices.has(entry.device) &&
      !entry.readOnly &&
      entry.fsType !== 'vfat',
  );
  return toTargets(chosen);
}

/**
 * The configured mount points, each of which must be a mount point of the guest (a path inside a
 * filesystem is refused: fsfreeze would freeze the whole filesystem that holds it).
 */
export function selectMountPoints(entries: MountEntry[], mountPoints: string[], guest: string, note?: string): FreezeTarget[] {
  const chosen: MountEntry[] = [];
  const missing: string[] = [];
  for (const mountPoint of mountPoints) {
    const entry = findMount(entries, mountPoint);
    if (entry) chosen.push(entry);
    else missing.push(mountPoint);
  }
  if (missing.length > 0) {
    throw new StillpointError(`${missing.map((m) => JSON.stringify(m)).join(', ')} ${missing.length === 1 ? 'is not a mount point' : 'are not mount points'} on the guest${note ? ` (${note})` : ''}`, {
      where: guest,
      hint: 'List only mount points in mountPoints (see /proc/self/mountinfo on the guest); fsfreeze on a path inside a filesystem would freeze the whole filesystem that holds it',
    });
  }
  return toTargets(chosen);
}

/** Short description of a target for logs, errors and the restore point. */
export function describeTarget(target: FreezeTarget): string {
  return `${target.mountPoint} (${target.fsType} on ${target.source})`;
}
