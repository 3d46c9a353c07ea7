/**
 * The lab's files. A lab is a directory:
 *
 * ```
 * lab.json            hosts, clusters, volumes, VMs, failure injection, workload settings (edit freely)
 * volumes/<name>/     a volume: a directory holding VM files (or a btrfs subvolume)
 * state/<vm id>.json  what the simulated host changed: each disk's chain, checkpoints, reference points
 * state/<vm id>/      the VM's change logs (change tracking), one per disk
 * state/failures.json how often each injected failure has fired
 * snapshots/          lab-made volume snapshots (copies), named stillpoint-lab-snapshot@...
 * events.jsonl        the event trace: what the host saw, one JSON object a line
 * ```
 */
import { readFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { writeDurably } from '../../core/util/durable.ts';
import { z } from 'zod';
import { ConfigError, NotFoundError, StillpointError } from '../../core/errors.ts';

export const LAB_FILE = 'lab.json';

const name = z.string().min(1).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-", starting with a letter or digit');

export const failureSchema = z.object({
  /**
   * What fails: `checkpoint` (creating a checkpoint fails), `quiesce` (the guest does not reach a
   * consistent point before the deadline), `merge` (the merge fails: file in use), `host` (the host
   * stops answering).
   */
  on: z.enum(['checkpoint', 'quiesce', 'merge', 'host']),
  /** VM name the failure applies to (`checkpoint`, `quiesce`, `merge`). */
  vm: z.string().min(1).optional(),
  /** Host name the failure applies to (`host`; for the others: every VM on that host). */
  host: z.string().min(1).optional(),
  /** For `host`: which calls get no answer (default every call). */
  during: z.enum(['inventory', 'checkpoint', 'merge', 'any']).default('any'),
  /** How many times the failure fires before the lab behaves again (default: always). */
  times: z.number().int().positive().optional(),
  /** Message to fail with (a default one names what failed). */
  message: z.string().optional(),
}).strict();
export type Failure = z.output<typeof failureSchema>;

export const workloadSchema = z.object({
  pageDelayMs: z.number().int().min(0).default(2),
  txGapMs: z.number().int().min(0).default(5),
  minPages: z.number().int().min(2).max(16).default(3),
  maxPages: z.number().int().min(2).max(16).default(8),
  /** Data pages (4 KiB each) the workload spreads its writes over. */
  dataPages: z.number().int().min(16).default(2048),
  /** How long a freeze may last before the guest thaws by itself (VSS's hold limit is 10 s). */
  holdLimitMs: z.number().int().positive().default(10_000),
}).strict();

const diskSchema = z.object({
  /** Disk id within the VM, e.g. "SCSI 0:0". */
  id: z.string().min(1),
  volume: name,
  /** Base disk file, relative to the volume directory, e.g. "win-app/disk0.vhdx". */
  file: z.string().min(1).regex(/\.vhdx$/i, 'a .vhdx file'),
  virtualSize: z.number().int().positive().multipleOf(1024 * 1024, 'a whole number of MiB'),
  /** Block size of the VHDX (default 1 MiB, to keep lab files small). */
  blockSize: z.number().int().positive().optional(),
}).strict();

const vmSchema = z.object({
  id: z.string().min(1),
  name,
  host: name,
  configurationVersion: z.string().regex(/^\d+\.\d+$/, 'a "major.minor" version such as "9.0"'),
  generation: z.union([z.literal(1), z.literal(2)]).default(2),
  guestOs: z.enum(['windows', 'linux']),
  state: z.enum(['running', 'off', 'saved', 'paused', 'saving', 'starting', 'stopping', 'pausing', 'resuming', 'critical', 'other']),
  checkpointType: z.enum(['disabled', 'production', 'productionOnly', 'standard']).default('production'),
  integration: z.object({
    vssRequestor: z.object({ enabled: z.boolean(), running: z.boolean() }).strict().optional(),
    vssDaemon: z.boolean().optional(),
  }).strict().default({}),
  disks: z.array(diskSchema).default([]),
  notes: z.string().optional(),
}).strict();

const hostSchema = z.object({
  name,
  osBuild: z.number().int().positive(),
  cluster: name.optional(),
}).strict();

const clusterSchema = z.object({
  name,
  nodes: z.array(name).min(1),
  functionalLevel: z.number().int().positive(),
}).strict();

const volumeSchema = z.object({
  name,
  /** Directory of the volume, relative to the lab directory (default `volumes/<name>`). */
  path: z.string().min(1).optional(),
}).strict();

export const labFileSchema = z.object({
  $schema: z.string().optional(),
  description: z.string().optional(),
  hosts: z.array(hostSchema).min(1),
  clusters: z.array(clusterSchema).default([]),
  volumes: z.array(volumeSchema).min(1),
  vms: z.array(vmSchema).default([]),
  failures: z.array(failureSchema).default([]),
  workload: workloadSchema.default(workloadSchema.parse({})),
  /** How long a production checkpoint waits for the guest to reach a consistent point (VSS: about 10 s). */
  quiesceDeadlineMs: z.number().int().positive().default(10_000),
}).strict();

export type LabFile = z.output<typeof labFileSchema>;
export type LabFileInput = z.input<typeof labFileSchema>;
export type LabVm = LabFile['vms'][number];
export type LabDisk = LabVm['disks'][number];

/** Parse and cross-check a lab file; every problem is named with its path. */
export function parseLabFile(raw: unknown, where: string): LabFile {
  const parsed = labFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top)'}: ${i.message}`), { where });
  }
  const lab = parsed.data;
  const problems: string[] = [];
  const hosts = new Set(lab.hosts.map((h) => h.name));
  const clusters = new Map(lab.clusters.map((c) => [c.name, c]));
  const volumes = new Set(lab.volumes.map((v) => v.name));
  const unique = (values: string[], what: string) => {
    const seen = new Set<string>();
    for (const v of values) { if (seen.has(v)) problems.push(`${what} "${v}" appears twice`); seen.add(v); }
  };
  unique(lab.hosts.map((h) => h.name), 'host');
  unique(lab.vms.map((v) => v.name), 'VM name');
  unique(lab.vms.map((v) => v.id), 'VM id');
  unique(lab.volumes.map((v) => v.name), 'volume');
  lab.hosts.forEach((h, i) => {
    if (h.cluster && !clusters.has(h.cluster)) problems.push(`hosts.${i}.cluster: no cluster "${h.cluster}" in clusters`);
  });
  lab.clusters.forEach((c, i) => c.nodes.forEach((n, j) => {
    if (!hosts.has(n)) problems.push(`clusters.${i}.nodes.${j}: no host "${n}" in hosts`);
  }));
  lab.vms.forEach((vm, i) => {
    if (!hosts.has(vm.host)) problems.push(`vms.${i}.host: no host "${vm.host}" in hosts (VM ${vm.name})`);
    if (vm.guestOs === 'windows' && vm.integration.vssRequestor === undefined) problems.push(`vms.${i}.integration.vssRequestor: a Windows VM (${vm.name}) needs { "enabled": ..., "running": ... }`);
    if (vm.guestOs === 'linux' && vm.integration.vssDaemon === undefined) problems.push(`vms.${i}.integration.vssDaemon: a Linux VM (${vm.name}) needs true or false`);
    unique(vm.disks.map((d) => d.id), `disk id of VM ${vm.name}`);
    vm.disks.forEach((d, j) => {
      if (!volumes.has(d.volume)) problems.push(`vms.${i}.disks.${j}.volume: no volume "${d.volume}" in volumes (VM ${vm.name})`);
      if (isAbsolute(d.file) || d.file.split(/[\\/]/).includes('..')) problems.push(`vms.${i}.disks.${j}.file: must be a path inside the volume (VM ${vm.name})`);
    });
  });
  lab.failures.forEach((f, i) => {
    if (f.on === 'host' && !f.host) problems.push(`failures.${i}.host: a "host" failure names the host`);
    if (f.on !== 'host' && !f.vm && !f.host) problems.push(`failures.${i}: a "${f.on}" failure names a vm (or a host)`);
    if (f.vm && !lab.vms.some((v) => v.name === f.vm)) problems.push(`failures.${i}.vm: no VM "${f.vm}"`);
    if (f.host && !hosts.has(f.host)) problems.push(`failures.${i}.host: no host "${f.host}"`);
  });
  if (problems.length) throw new ConfigError(problems, { where });
  return lab;
}

/** Paths of a lab directory. */
export class LabPaths {
  readonly dir: string;
  constructor(dir: string) { this.dir = resolve(dir); }
  get labFile(): string { return join(this.dir, LAB_FILE); }
  get stateDir(): string { return join(this.dir, 'state'); }
  get snapshotsDir(): string { return join(this.dir, 'snapshots'); }
  get eventsFile(): string { return join(this.dir, 'events.jsonl'); }
  get lockFile(): string { return join(this.dir, 'state', 'lock'); }
  get failuresFile(): string { return join(this.dir, 'state', 'failures.json'); }
  vmStateFile(vmId: string): string { return join(this.stateDir, `${vmId}.json`); }
  changeLog(vmId: string, diskId: string): string { return join(this.stateDir, vmId, `${diskId.replace(/[^A-Za-z0-9._-]/g, '_')}.changes`); }
  volumePath(lab: LabFile, volume: string): string {
    const v = lab.volumes.find((x) => x.name === volume);
    if (!v) throw new NotFoundError(`no volume "${volume}"`, { where: this.labFile });
    return resolve(this.dir, v.path ?? join('volumes', v.name));
  }
  baseDisk(lab: LabFile, disk: LabDisk): string { return join(this.volumePath(lab, disk.volume), disk.file); }
}

export async function loadLab(paths: LabPaths): Promise<LabFile> {
  let text: string;
  try {
    text = await readFile(paths.labFile, 'utf8');
  } catch (error) {
    throw new NotFoundError(`no lab here: ${paths.labFile} cannot be read (${(error as NodeJS.ErrnoException).code})`, {
      where: paths.dir, hint: 'create one with "stillpoint lab init DIR", or set the lab driver option "dir"', cause: error,
    });
  }
  let raw: unknown;
  try { raw = JSON.parse(text); } catch (error) {
    throw new ConfigError([`not valid JSON: ${(error as Error).message}`], { where: paths.labFile });
  }
  return parseLabFile(raw, paths.labFile);
}

export function loadLabSync(paths: LabPaths): LabFile {
  return parseLabFile(JSON.parse(readFileSync(paths.labFile, 'utf8')), paths.labFile);
}

/** Write a file atomically and durably (see `writeDurably`), creating its directory. */
export async function writeAtomic(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeDurably(dirname(path), basename(path), text);
}

export async function readJson<T>(path: string, fallback: T): Promise<T> {
  let text: string;
  try { text = await readFile(path, 'utf8'); } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return fallback;
    throw error;
  }
  try { return JSON.parse(text) as T; } catch (error) {
    throw new StillpointError(`damaged lab state file: ${(error as Error).message}`, { where: path, hint: 'delete it to let the lab start over from lab.json' });
  }
}
