import type { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { CheckpointDisk } from '../../../core/contracts/driver.ts';
import { Engine } from '../../../core/engine/engine.ts';
import { Journal } from '../../../core/journal/journal.ts';
import { openRepository, repositoryConfigSchema } from '../../../core/repository/index.ts';
import labPlugin from '../../../plugins/lab/index.ts';
import type { LabDriver } from '../../../plugins/lab/driver.ts';
import type { LabSnapshotProvider } from '../../../plugins/lab/snapshot.ts';
import { LocalStorage } from '../../../plugins/local/storage.ts';
import offHostPlugin, { STILLPOINT_BIN } from '../../../plugins/off-host/index.ts';
import vhdxPlugin from '../../../plugins/vhdx/index.ts';

/**
 * An engine over the lab in `dir` with the off-host transport (one stdio proxy "p1" running the real
 * `stillpoint proxy`), the VHDX reader, a local repository in `dir/repository` and a journal;
 * everything is closed and `dir` removed at teardown.
 */
export async function offHostLabRig(t: ExecutionContext, dir: string, options: { proxyConcurrency: number; chunkSize: number }) {
  const engine = new Engine();
  const context = { configDir: dir, stateDir: join(dir, '.stillpoint-state') };
  const proxy = {
    name: 'p1', volumes: ['*'], concurrency: options.proxyConcurrency,
    command: [process.execPath, STILLPOINT_BIN, 'proxy', '--listen', 'stdio', '--name', 'p1', '--plugins', 'vhdx,local'],
  };
  const offHost = offHostPlugin(offHostPlugin.optionsSchema.parse({ proxies: [proxy], heartbeatMs: 200, deadAfterMs: 5000 }), context);
  await engine.use(offHost, 'off-host');
  const labInstance = labPlugin(labPlugin.optionsSchema.parse({}), context);
  await engine.use(labInstance, 'lab');
  await engine.use(vhdxPlugin(vhdxPlugin.optionsSchema.parse({}), context), 'vhdx');
  await engine.start();
  const driver = engine.driver({ name: 'lab', type: 'lab', options: { dir } }) as LabDriver;
  const repoConfig = repositoryConfigSchema.parse({ storage: { type: 'local', options: { path: join(dir, 'repository') } }, chunkSize: options.chunkSize });
  const repo = await openRepository(new LocalStorage(join(dir, 'repository')), repoConfig, { create: true, workers: 1, lock: { waitMs: 120_000 } });
  const journal = new Journal(context.stateDir);
  const provider = (labInstance as unknown as { provider: LabSnapshotProvider }).provider;
  t.teardown(async () => {
    await engine.close();
    await repo.close();
    for (const s of await provider.list().catch(() => [])) await provider.delete(s).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  return { engine, offHost, driver, repo, repoConfig, journal, provider };
}

/** SHA-256 of a checkpoint disk's frozen chain, read whole through the engine's reader. */
export async function hashFrozenChain(engine: Engine, d: CheckpointDisk): Promise<string> {
  const source = await engine.reader(d.chain[0]).open(d.chain[0], { parentPaths: d.chain.slice(1) });
  try {
    const data = Buffer.alloc(source.virtualSize);
    await source.read(0, data, data.length, 0);
    return createHash('sha256').update(data).digest('hex');
  } finally {
    await source.close();
  }
}
