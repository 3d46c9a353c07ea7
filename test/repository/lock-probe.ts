/**
 * A second process for the writer-lock tests: opens the repository at argv[2] and tries to start a
 * restore point (waiting up to argv[3] ms for the lock). Prints one JSON line: what happened.
 */
import { openRepository, repositoryConfigSchema } from '../../core/repository/index.ts';
import { LocalStorage } from '../../plugins/local/storage.ts';
import { meta } from './helpers.ts';

const [path, waitMs] = process.argv.slice(2);
const repo = await openRepository(new LocalStorage(path), repositoryConfigSchema.parse({ storage: { type: 'local', options: { path } } }), { workers: 1, lock: { waitMs: Number(waitMs) } });
const started = Date.now();
try {
  const writer = await repo.startRestorePoint(meta('vm-probe'));
  const { id } = await writer.commit();
  console.log(JSON.stringify({ ok: true, id, waitedMs: Date.now() - started }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, message: (error as Error).message, waitedMs: Date.now() - started }));
} finally {
  await repo.close();
}
