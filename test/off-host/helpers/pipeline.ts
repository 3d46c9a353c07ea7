import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import type { VmFacts } from '../../../core/contracts/vm.ts';
import { Engine } from '../../../core/engine/engine.ts';
import { runJob, type JobSpec } from '../../../core/engine/pipeline.ts';
import type { Limits } from '../../../core/engine/semaphore.ts';
import { Journal } from '../../../core/journal/journal.ts';
import { openRepository, type Repository } from '../../../core/repository/repository.ts';
import { repositoryConfigSchema } from '../../../core/repository/options.ts';
import { restoreDisk } from '../../../core/repository/restore.ts';
import { LocalStorage } from '../../../plugins/local/storage.ts';
import btrfsPlugin from '../../../plugins/btrfs/index.ts';
import { BtrfsSnapshotProvider } from '../../../plugins/btrfs/provider.ts';
import offHostPlugin, { STILLPOINT_BIN } from '../../../plugins/off-host/index.ts';
import type { ProxyPool } from '../../../plugins/off-host/pool.ts';
import type { ProxySpec } from '../../../plugins/off-host/options.ts';
import filehost, { type FileHost, writeHost } from '../../fixtures/plugins/filehost/index.ts';
import { recordHooks } from '../../core/helpers.ts';
import type { LoopBtrfs } from './btrfs-volume.ts';

export const RAW_READER = fileURLToPath(new URL('../fixtures/raw-reader.ts', import.meta.url));

/** A proxy that this test starts as a real `stillpoint proxy` process (reading raw disks). */
export function proxySpec(name: string, extra: Partial<ProxySpec> = {}): ProxySpec {
  return {
    name,
    command: [process.execPath, STILLPOINT_BIN, 'proxy', '--listen', 'stdio', '--name', name, '--plugins', `local,${RAW_READER}`],
    volumes: ['*'],
    concurrency: 2,
    ...extra,
  };
}

export interface OffHostVm {
  name: string;
  /** Index of the btrfs subvolume holding the VM's disk. */
  volume: number;
  /** Disk size (bytes); the first half is random data, the rest zeros. */
  size?: number;
}

export interface OffHostSetup {
  dir: string;
  engine: Engine;
  host: FileHost;
  repo: Repository;
  journal: Journal;
  hooks: string[];
  volumes: string[];
  /** Each VM's disk file and its content before the job. */
  disks: Map<string, { path: string; data: Buffer }>;
  pools: ReadonlyMap<string, ProxyPool>;
  run(job?: Partial<JobSpec>, limits?: Limits): ReturnType<typeof runJob>;
  /** Restore the VM's disk from its latest restore point into a buffer. */
  restored(vm: string): Promise<Buffer>;
  btrfsSnapshots(): Promise<string[]>;
}

/**
 * A file-backed test host (core's test fixture) whose VMs keep raw disks on real btrfs
 * subvolumes, the btrfs snapshot provider, the off-host transport with real proxy processes, and
 * the real repository on a local storage target.
 */
export async function offHostSetup(t: ExecutionContext, fs: LoopBtrfs, vms: OffHostVm[], options: { proxies: ProxySpec[]; volumes: number; retries?: number }): Promise<OffHostSetup> {
  const dir = mkdtempSync(join(tmpdir(), 'stillpoint-offhost-'));
  const tag = randomBytes(3).toString('hex');
  const volumes = Array.from({ length: options.volumes }, (_, i) => fs.subvolume(`vol${i}-${tag}`));
  const disks = new Map<string, { path: string; data: Buffer }>();
  const facts: Array<Partial<VmFacts> & { name: string }> = vms.map((vm) => {
    const size = vm.size ?? 1024 * 1024;
    const data = Buffer.alloc(size);
    randomBytes(size / 2).copy(data);
    const path = join(volumes[vm.volume], vm.name, 'disk0.raw');
    mkdirSync(join(volumes[vm.volume], vm.name), { recursive: true });
    writeFileSync(path, data);
    disks.set(vm.name, { path, data });
    return { name: vm.name, disks: [{ id: 'scsi0', path, volume: volumes[vm.volume], virtualSize: size, format: 'vhdx' }] };
  });
  writeHost(join(dir, 'host'), facts, { size: 4096 });

  const engine = new Engine();
  const context = { configDir: dir, stateDir: join(dir, 'state') };
  const offHost = offHostPlugin(offHostPlugin.optionsSchema.parse({ proxies: options.proxies, retries: options.retries ?? 1, heartbeatMs: 200, deadAfterMs: 5000 }), context);
  await engine.use(offHost, 'off-host');
  await engine.use(btrfsPlugin(btrfsPlugin.optionsSchema.parse({}), context), 'btrfs');
  const fh = filehost(filehost.optionsSchema.parse({ dir: join(dir, 'host') }), context);
  await engine.use(fh, 'test');
  const hooks = recordHooks(engine);

  const repoConfig = repositoryConfigSchema.parse({ storage: { type: 'local', options: { path: join(dir, 'repo') } }, chunkSize: 256 * 1024 });
  const repo = await openRepository(new LocalStorage(join(dir, 'repo')), repoConfig, { create: true, workers: 1, lock: { waitMs: 120_000 } });
  const journal = new Journal(join(dir, 'state'));
  const driver = engine.driver({ name: 'lab', type: 'filehost', options: {} });
  const provider = new BtrfsSnapshotProvider();

  t.teardown(async () => {
    await engine.close();
    await repo.close();
    // snapshots a failed test left behind go before the volume is unmounted
    for (const v of volumes) for (const s of await provider.list({ name: v, path: v })) await provider.delete(s);
    rmSync(dir, { recursive: true, force: true });
  });

  return {
    dir, engine, repo, journal, hooks, volumes, disks,
    host: (fh as unknown as { host: FileHost }).host,
    pools: (offHost as unknown as { pools: ReadonlyMap<string, ProxyPool> }).pools,
    run: (job = {}, limits) => runJob({
      engine, drivers: [driver], repository: repo, journal, limits,
      repositoryAccess: { config: repoConfig as unknown as Record<string, unknown> },
      job: { name: 'nightly', vms: { include: ['*'], exclude: [] }, mode: 'offHost', consistency: 'prefer', ...job },
    }),
    async restored(vm) {
      const manifest = await repo.latest(vm);
      if (!manifest) throw new Error(`VM ${vm} has no restore point`);
      const out = join(dir, `restored-${vm}.img`);
      await restoreDisk(repo, manifest, 'scsi0', out, { format: 'raw', overwrite: true });
      const data = readFileSync(out);
      rmSync(out);
      return data;
    },
    async btrfsSnapshots() {
      const all: string[] = [];
      for (const v of volumes) for (const s of await provider.list({ name: v, path: v })) all.push(s.id);
      return all;
    },
  };
}

/** Index of the first entry equal to `entry` (fails the test when absent). */
export function at(t: ExecutionContext, log: string[], entry: string): number {
  const i = log.indexOf(entry);
  t.not(i, -1, `"${entry}" is in the log`);
  return i;
}
