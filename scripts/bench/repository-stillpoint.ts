/**
 * The Stillpoint side of the repository benchmark: one backup or restore per process, so that
 * /usr/bin/time measures its wall time and peak memory alone.
 *
 *   node --import tsx scripts/bench/repository-stillpoint.ts backup <repo> <image> [--changed ranges.json] [--chunk-size N] [--level N]
 *   node --import tsx scripts/bench/repository-stillpoint.ts restore <repo> <out>
 *
 * The passphrase comes from STILLPOINT_PASSPHRASE (the repository is encrypted when it is set).
 * Prints one JSON line with what the backup read and stored.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { openRepository, RawFileDisk, repositoryConfigSchema } from '../../core/repository/index.ts';
import { LocalStorage } from '../../plugins/local/storage.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { changed: { type: 'string' }, 'chunk-size': { type: 'string' }, level: { type: 'string' } },
});
const [command, repoPath, file] = positionals;
const config = repositoryConfigSchema.parse({
  storage: { type: 'local', options: { path: repoPath } },
  ...(values['chunk-size'] ? { chunkSize: Number(values['chunk-size']) } : {}),
  ...(values.level ? { compression: { level: Number(values.level) } } : {}),
});
const repo = await openRepository(new LocalStorage(repoPath), config, { create: command === 'backup', loadIndex: true, writer: command === 'backup' ? 'backup' : undefined, passphrase: process.env.STILLPOINT_PASSPHRASE || undefined });
const started = Date.now();
if (command === 'backup') {
  const changed = values.changed ? JSON.parse(await readFile(values.changed, 'utf8')) : undefined;
  const source = await RawFileDisk.open(file);
  const writer = await repo.startRestorePoint({
    job: 'bench',
    vm: { id: 'bench-vm', name: 'bench', driver: 'bench' },
    consistency: { method: 'offline', level: 'application', reason: 'benchmark image' },
    time: new Date().toISOString(),
  });
  const r = await writer.storeDisk({ id: 'disk0', virtualSize: source.virtualSize, logicalSectorSize: 512 }, source, { changed });
  const { id } = await writer.commit();
  await source.close();
  console.log(JSON.stringify({ id, ...r, seconds: (Date.now() - started) / 1000 }));
} else if (command === 'restore') {
  const r = await repo.restoreDisk('latest', 'disk0', file, { vm: 'bench-vm', overwrite: true });
  console.log(JSON.stringify({ ...r, seconds: (Date.now() - started) / 1000 }));
} else {
  console.error('usage: repository-stillpoint.ts backup|restore <repo> <file>');
  process.exitCode = 2;
}
await repo.close();
