import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import createDebug from 'debug';
import type { VolumeRef } from '../contracts/snapshot.ts';
import { StillpointError } from '../errors.ts';
import { processAlive, syncDir, writeDurably } from '../util/durable.ts';

const debug = createDebug('stillpoint:journal');

/** The VM an intent is about, as the journal keeps it (enough to find it again in an inventory). */
export interface JournalVm {
  id: string;
  name: string;
  /** Driver instance name. */
  driver: string;
  host: string;
}

/** Something the engine is about to create that must not outlive the run. */
export type Intent =
  | { kind: 'freeze'; vm: JournalVm; quiescer: string; deadline: string }
  | { kind: 'checkpoint'; vm: JournalVm; checkpointName: string; checkpointId?: string }
  | { kind: 'volumeSnapshot'; provider: string; volume: VolumeRef; snapshotId?: string };

export interface JournalEntry {
  id: string;
  runId: string;
  pid: number;
  host: string;
  createdAt: string;
  intent: Intent;
}

/** A job run that holds the journal: live while its process is. */
export interface RunRecord {
  runId: string;
  pid: number;
  host: string;
  job: string;
  startedAt: string;
}



/**
 * The crash-safe journal in `<stateDir>/journal`: one file per intent, written (and fsynced, file and
 * directory) BEFORE the engine freezes a guest, creates a checkpoint or a volume snapshot, and removed
 * once that thing is undone. Runs register in `<stateDir>/runs` so a reconcile leaves a live run's
 * intents alone (a run is live while its process is: same host, pid alive).
 */
export class Journal {
  readonly dir: string;
  readonly runsDir: string;
  #ready: Promise<void> | undefined;

  constructor(readonly stateDir: string) {
    this.dir = join(stateDir, 'journal');
    this.runsDir = join(stateDir, 'runs');
  }

  #ensure(): Promise<void> {
    this.#ready ??= (async () => {
      try {
        await mkdir(this.dir, { recursive: true, mode: 0o700 });
        await mkdir(this.runsDir, { recursive: true, mode: 0o700 });
      } catch (e) {
        this.#ready = undefined;
        throw new StillpointError(`cannot create the state directory: ${(e as Error).message}`, {
          where: this.stateDir, hint: 'set "stateDir" in the config to a writable directory', cause: e,
        });
      }
    })();
    return this.#ready;
  }

  async beginRun(run: Omit<RunRecord, 'pid' | 'host'>): Promise<RunRecord> {
    await this.#ensure();
    const record: RunRecord = { ...run, pid: process.pid, host: hostname() };
    await writeDurably(this.runsDir, `${run.runId}.json`, JSON.stringify(record));
    return record;
  }

  async endRun(runId: string): Promise<void> {
    await unlink(join(this.runsDir, `${runId}.json`)).catch(() => {});
    await syncDir(this.runsDir).catch(() => {});
  }

  async runs(): Promise<RunRecord[]> {
    await this.#ensure();
    return this.#readAll<RunRecord>(this.runsDir);
  }

  /** Runs whose process is alive (on this host). A run file of a dead process is removed. */
  async liveRuns(): Promise<RunRecord[]> {
    const live: RunRecord[] = [];
    for (const r of await this.runs()) {
      if (r.host === hostname() && processAlive(r.pid)) live.push(r);
      else if (r.host === hostname()) await this.endRun(r.runId);
      else live.push(r); // another host's run: we cannot tell, so leave it alone
    }
    return live;
  }

  /** Record an intent durably; resolves once it is on disk. */
  async record(runId: string, intent: Intent): Promise<JournalEntry> {
    await this.#ensure();
    const entry: JournalEntry = {
      id: `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`,
      runId, pid: process.pid, host: hostname(), createdAt: new Date().toISOString(), intent,
    };
    await writeDurably(this.dir, `${entry.id}.json`, JSON.stringify(entry, null, 2));
    debug('recorded %s %s (%s)', intent.kind, entry.id, runId);
    return entry;
  }

  /** Amend an entry (e.g. with the id the driver gave the checkpoint). */
  async update(entry: JournalEntry, intent: Intent): Promise<JournalEntry> {
    const next = { ...entry, intent };
    await writeDurably(this.dir, `${entry.id}.json`, JSON.stringify(next, null, 2));
    return next;
  }

  /** The thing is undone: forget the intent. */
  async clear(entry: JournalEntry): Promise<void> {
    await unlink(join(this.dir, `${entry.id}.json`)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    await syncDir(this.dir);
    debug('cleared %s %s', entry.intent.kind, entry.id);
  }

  async entries(): Promise<JournalEntry[]> {
    await this.#ensure();
    const all = await this.#readAll<JournalEntry>(this.dir);
    return all.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async #readAll<T>(dir: string): Promise<T[]> {
    const out: T[] = [];
    for (const name of await readdir(dir)) {
      if (!name.endsWith('.json') || name.startsWith('.')) continue;
      try {
        out.push(JSON.parse(await readFile(join(dir, name), 'utf8')) as T);
      } catch (e) {
        // a file vanished between readdir and read (another process cleared it) is fine
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new StillpointError(`unreadable journal file: ${(e as Error).message}`, {
          where: join(dir, name), hint: 'the file is damaged; inspect it, undo what it names by hand, then delete it',
        });
      }
    }
    return out;
  }
}
