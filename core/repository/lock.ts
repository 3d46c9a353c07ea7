import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import createDebug from 'debug';
import { StillpointError } from '../errors.ts';
import { keys, lockSchema, type LockInfo } from './format.ts';
import type { RetryingStorage } from './storage-util.ts';
import { processAlive } from '../util/durable.ts';

const debug = createDebug('stillpoint:repository');

export interface LockOptions {
  /** How long to wait for another writer to finish before giving up (default 0: fail at once). */
  waitMs?: number;
  /** A lock whose heartbeat is older than this is stale (default 10 minutes). */
  staleMs?: number;
  /** Heartbeat interval (default 60 s). */
  heartbeatMs?: number;
}

/**
 * The one-writer lock of a repository (`locks/writer`): who holds it (host, pid, session) and a
 * heartbeat. A lock is stale when its owner's process is gone (same host) or its heartbeat is
 * older than `staleMs`; a stale lock is taken over. After writing the lock the writer reads it
 * back and keeps it only if its own session is there (two writers racing: the later put wins,
 * the other one sees a foreign session and backs off).
 */
export class WriterLock {
  private timer: NodeJS.Timeout | null = null;
  private released = false;

  private constructor(private readonly storage: RetryingStorage, readonly info: LockInfo, private readonly heartbeatMs: number) {}

  static async acquire(storage: RetryingStorage, purpose: string, options: LockOptions = {}): Promise<WriterLock> {
    const staleMs = options.staleMs ?? 10 * 60_000;
    const deadline = Date.now() + (options.waitMs ?? 0);
    const session = randomBytes(8).toString('hex');
    for (;;) {
      const current = await readLock(storage);
      if (current && !isStale(current, staleMs)) {
        if (Date.now() >= deadline) {
          throw new StillpointError(
            `the repository is locked by ${current.purpose} on host ${current.host} (pid ${current.pid}) since ${current.acquiredAt}`,
            { where: `${storage.name}:${keys.writerLock}`, hint: 'wait for it to finish; a lock whose owner died is taken over automatically once stale' },
          );
        }
        await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(10, deadline - Date.now()))));
        continue;
      }
      if (current) debug('taking over stale lock of %s pid %d (%s)', current.host, current.pid, current.heartbeatAt);
      const now = new Date().toISOString();
      const info: LockInfo = { format: 'stillpoint-lock', host: hostname(), pid: process.pid, session, purpose, acquiredAt: now, heartbeatAt: now };
      await storage.put(keys.writerLock, Buffer.from(JSON.stringify(info)));
      await new Promise((r) => setTimeout(r, 20));
      const check = await readLock(storage);
      if (check?.session === session) {
        const lock = new WriterLock(storage, info, options.heartbeatMs ?? 60_000);
        lock.startHeartbeat();
        return lock;
      }
    }
  }

  private startHeartbeat(): void {
    this.timer = setInterval(() => {
      const info = { ...this.info, heartbeatAt: new Date().toISOString() };
      this.storage.put(keys.writerLock, Buffer.from(JSON.stringify(info))).catch((e) => debug('lock heartbeat failed: %s', e.message));
    }, this.heartbeatMs);
    this.timer.unref();
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    const current = await readLock(this.storage);
    if (current?.session === this.info.session) await this.storage.delete(keys.writerLock);
  }
}

export async function readLock(storage: RetryingStorage): Promise<LockInfo | null> {
  const raw = await storage.getOrNull(keys.writerLock);
  if (!raw) return null;
  try {
    return lockSchema.parse(JSON.parse(raw.toString('utf8')));
  } catch {
    // A damaged lock file protects nothing: treat it as stale.
    return { format: 'stillpoint-lock', host: '?', pid: 0, session: 'damaged', purpose: 'unknown', acquiredAt: new Date(0).toISOString(), heartbeatAt: new Date(0).toISOString() };
  }
}

export function isStale(lock: LockInfo, staleMs: number): boolean {
  if (lock.host === hostname() && lock.pid > 0 && !processAlive(lock.pid)) return true;
  return Date.now() - Date.parse(lock.heartbeatAt) > staleMs;
}


/**
 * The writer lock as one writing process (one `Repository` instance) holds it: any number of
 * restore points written at once share one `locks/writer` (reference-counted: taken by the first,
 * released by the last), while garbage collection's sweep takes it exclusively — never while a
 * restore point of this instance is open, and no restore point starts while the sweep runs. Other
 * processes (and other instances) see one lock and are refused or wait, as with a single writer.
 */
export class ProcessWriterLock {
  private lock: WriterLock | null = null;
  private shared = 0;
  private readonly purposes = new Map<number, string>();
  private nextHolder = 0;
  private exclusiveHeld = false;
  private exclusiveDone: Promise<void> = Promise.resolve();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly storage: RetryingStorage, private readonly options: LockOptions = {}) {}

  /** Restore points being written by this instance now. */
  get writers(): number {
    return this.shared;
  }

  /** Run `fn` after every earlier state change (acquire/release) has finished. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Join the process's writer lock (taking it from the storage target if this is the first writer). */
  async share(purpose: string): Promise<() => Promise<void>> {
    let holder = -1;
    for (;;) {
      await this.exclusiveDone;
      const joined = await this.serial(async () => {
        if (this.exclusiveHeld) return false;
        if (!this.lock) this.lock = await WriterLock.acquire(this.storage, purpose, this.options);
        this.shared++;
        holder = this.nextHolder++;
        this.purposes.set(holder, purpose);
        return true;
      });
      if (joined) break;
    }
    debug('writer %d joined the lock (%d writing): %s', holder, this.shared, purpose);
    let released = false;
    return () => {
      if (released) return Promise.resolve();
      released = true;
      return this.serial(async () => {
        this.purposes.delete(holder);
        if (--this.shared > 0) return;
        const lock = this.lock;
        this.lock = null;
        await lock?.release();
      });
    };
  }

  /**
   * Take the lock alone (garbage collection's sweep): waits up to `waitMs` for this instance's
   * writers to finish and for another owner's lock, then fails (naming who holds it).
   */
  async exclusive(purpose: string, waitMs = 0): Promise<() => Promise<void>> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const taken = await this.serial(async () => {
        if (this.shared === 0 && !this.exclusiveHeld) {
          const lock = await WriterLock.acquire(this.storage, purpose, { ...this.options, waitMs: Math.max(0, deadline - Date.now()) });
          this.exclusiveHeld = true;
          let done!: () => void;
          this.exclusiveDone = new Promise((r) => (done = r));
          return async () => {
            try {
              await lock.release();
            } finally {
              this.exclusiveHeld = false;
              done();
            }
          };
        }
        return null;
      });
      if (taken) return taken;
      if (Date.now() >= deadline) {
        throw new StillpointError(
          `the repository is locked by ${[...this.purposes.values()].join('; ')} (this process writes ${this.shared} restore point(s))`,
          { where: `${this.storage.name}:${keys.writerLock}`, hint: 'wait for the backups to finish' },
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(100, Math.max(10, deadline - Date.now()))));
    }
  }
}
