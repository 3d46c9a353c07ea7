/**
 * Names of Stillpoint's btrfs snapshots. A name carries everything the journal's reconcile needs
 * to recognise a snapshot as Stillpoint's and to say which job and volume it belongs to:
 *
 *   stillpoint@<job id>@<volume name>@<created, compact UTC>@<random>
 *
 * The job id and volume name are percent-encoded (encodeURIComponent encodes `@` and `/`), so any
 * id round-trips and the `@` separators stay unambiguous.
 */

export const SNAPSHOT_PREFIX = 'stillpoint@';

export interface SnapshotName {
  jobId: string;
  volume: string;
  /** ISO 8601 UTC time with milliseconds. */
  createdAt: string;
  nonce: string;
}

/** Longest name a btrfs directory entry may have. */
const NAME_MAX = 255;

function compactTime(iso: string): string {
  // 2026-11-24T20:23:11.123Z -> 20261124T202311.123Z
  return iso.replace(/[-:]/g, '');
}

function expandTime(compact: string): string | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z$/.exec(compact);
  if (!m) return undefined;
  const iso = `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`;
  return Number.isNaN(Date.parse(iso)) ? undefined : iso;
}

function encode(part: string): string {
  // encodeURIComponent leaves `.` alone: encode a leading dot so a name is never `.`/`..`-like.
  return encodeURIComponent(part).replace(/^\./, '%2E');
}

export function formatSnapshotName(parts: SnapshotName): string {
  if (!/^[A-Za-z0-9]+$/.test(parts.nonce)) throw new Error(`snapshot nonce must be alphanumeric, got "${parts.nonce}"`);
  const date = new Date(parts.createdAt);
  if (Number.isNaN(date.getTime())) throw new Error(`snapshot time is not a date: "${parts.createdAt}"`);
  const name = [
    'stillpoint',
    encode(parts.jobId),
    encode(parts.volume),
    compactTime(date.toISOString()),
    parts.nonce,
  ].join('@');
  if (name.length > NAME_MAX) {
    throw new Error(`snapshot name for job "${parts.jobId}" on volume "${parts.volume}" is ${name.length} bytes, more than btrfs allows (${NAME_MAX}); use a shorter job id or volume name`);
  }
  return name;
}

/** The parts of a Stillpoint snapshot name, or `undefined` for any other name. */
export function parseSnapshotName(name: string): SnapshotName | undefined {
  if (!name.startsWith(SNAPSHOT_PREFIX)) return undefined;
  const fields = name.split('@');
  if (fields.length !== 5) return undefined;
  const [, job, volume, time, nonce] = fields;
  const createdAt = expandTime(time);
  if (!createdAt || !/^[A-Za-z0-9]+$/.test(nonce) || !job || !volume) return undefined;
  try {
    return { jobId: decodeURIComponent(job), volume: decodeURIComponent(volume), createdAt, nonce };
  } catch {
    return undefined;
  }
}
