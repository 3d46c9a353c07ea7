import test from 'ava';
import { join } from 'node:path';
import { openRepository, repositoryConfigSchema, type Repository } from '../../core/repository/index.ts';
import { keys } from '../../core/repository/format.ts';
import { LocalStorage } from '../../plugins/local/storage.ts';
import { fixture, meta, type Fixture } from './helpers.ts';

/** Local storage that counts the manifests read. */
class CountingStorage extends LocalStorage {
  manifestGets = 0;
  override async get(key: string): Promise<Buffer> {
    if (key.startsWith(keys.restorePointsPrefix)) this.manifestGets++;
    return super.get(key);
  }
}

const VMS = 6;
const POINTS = 5;
const hour = 3600_000;

/** VMS x POINTS restore points without disks, written in time order, by another `Repository`. */
async function populate(f: Fixture): Promise<Repository> {
  const writerRepo = await f.open();
  for (let p = 0; p < POINTS; p++) {
    for (let v = 0; v < VMS; v++) await commitPoint(writerRepo, v, p);
  }
  return writerRepo;
}

function pointTime(v: number, p: number): Date {
  return new Date(Date.UTC(2026, 10, 1) + (p * VMS + v) * hour);
}

async function commitPoint(repo: Repository, v: number, p: number): Promise<string> {
  const w = await repo.startRestorePoint(meta(`vm-${v}`, pointTime(v, p), v % 2 ? 'odd' : 'even'));
  return (await w.commit()).id;
}

/** The fixture's repository opened again, through storage that counts manifest reads. */
async function openCounting(f: Fixture): Promise<{ repo: Repository; storage: CountingStorage }> {
  const storage = new CountingStorage(join(f.dir, 'repo'));
  const config = repositoryConfigSchema.parse({ storage: { type: 'local', options: { path: storage.root } } });
  const repo = await openRepository(storage, config, { workers: 1, passphrase: undefined });
  return { repo, storage };
}

test('each manifest is read once per process, however many VMs ask for their latest restore point', async (t) => {
  const f = await fixture();
  t.teardown(() => f.cleanup());
  await populate(f);
  const { repo, storage } = await openCounting(f);
  t.teardown(() => repo.close());
  // Every VM's backup starts from its latest restore point.
  for (let v = 0; v < VMS; v++) {
    const latest = await repo.latest(`vm-${v}`);
    t.is(latest?.vm.id, `vm-${v}`);
    t.is(latest?.time, pointTime(v, POINTS - 1).toISOString());
  }
  // All read by the first VM's lookup (which keeps its own), then only each other VM's newest.
  t.is(storage.manifestGets, VMS * POINTS + (VMS - 1));
  // Found by name too, and a listing reads only what it returns.
  storage.manifestGets = 0;
  t.deepEqual((await repo.list({ vm: 'VM vm-2' })).map((s) => s.time), Array.from({ length: POINTS }, (_, p) => pointTime(2, p).toISOString()));
  t.is(storage.manifestGets, POINTS);
  storage.manifestGets = 0;
  const odd = await repo.list({ job: 'odd' });
  t.is(odd.length, (VMS / 2) * POINTS);
  t.true(odd.every((s) => s.job === 'odd'));
  t.is(storage.manifestGets, odd.length);
});

test('the catalog follows restore points written and removed by another process and by this one', async (t) => {
  const f = await fixture();
  t.teardown(() => f.cleanup());
  const other = await populate(f);
  const { repo, storage } = await openCounting(f);
  t.teardown(() => repo.close());
  t.is((await repo.latest('vm-1'))?.time, pointTime(1, POINTS - 1).toISOString());

  // Another process adds a newer restore point of vm-1: it is read once, when first listed.
  const added = await commitPoint(other, 1, POINTS);
  storage.manifestGets = 0;
  t.is((await repo.latest('vm-1'))?.id, added);
  t.is(storage.manifestGets, 1);
  t.is((await repo.latest('vm-3'))?.time, pointTime(3, POINTS - 1).toISOString());

  // ... and prunes vm-1 down to its last restore point: the others leave this process's listing.
  const pruned = await other.prune({ keepLast: 1 }, { vm: 'vm-1' });
  t.is(pruned.removed.length, POINTS);
  t.deepEqual((await repo.list({ vm: 'vm-1' })).map((s) => s.id), [added]);
  t.is((await repo.manifests()).length, VMS * POINTS - POINTS + 1);

  // A restore point this process commits is in its catalog at once (read only to be returned).
  const mine = await commitPoint(repo, 4, POINTS);
  storage.manifestGets = 0;
  t.is((await repo.latest('vm-4'))?.id, mine);
  t.is(storage.manifestGets, 1);
});
