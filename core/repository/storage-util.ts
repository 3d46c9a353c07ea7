import createDebug from 'debug';
import type { StorageTarget } from '../contracts/storage.ts';
import { NotFoundError, StillpointError, TransientError } from '../errors.ts';

const debug = createDebug('stillpoint:repository');

const KEY_RE = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Check a storage key against the contract: `/`-separated segments of [A-Za-z0-9._-], no `.` or `..`. */
export function assertValidKey(key: string, target: string): void {
  if (!KEY_RE.test(key) || key.split('/').some((s) => s === '.' || s === '..')) {
    throw new StillpointError(`invalid storage key ${JSON.stringify(key)}`, {
      where: target,
      hint: 'keys are /-separated segments of letters, digits, ".", "_" and "-" (not "." or "..")',
    });
  }
}

/** Prefix for list(): empty, or a key-like string that may end with `/` or mid-segment. */
export function assertValidPrefix(prefix: string, target: string): void {
  if (prefix === '') return;
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  assertValidKey(trimmed, target);
}

/** Map a Node.js system error from a storage operation to a Stillpoint error that says what to do. */
export function storageError(error: unknown, op: string, where: string): Error {
  const e = error as NodeJS.ErrnoException;
  if (e instanceof StillpointError) return e;
  const code = e?.code ?? '';
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new NotFoundError(`${op}: no such object`, { where, cause: e });
    case 'ENOSPC':
    case 'EDQUOT':
      return new StillpointError(`${op}: the storage target is full (${code})`, { where, hint: 'free space or prune old restore points, then run the backup again', cause: e });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new StillpointError(`${op}: permission denied (${code})`, { where, hint: 'check the owner and mode of the repository directory, or that it is not read-only', cause: e });
    case 'EIO':
      return new StillpointError(`${op}: I/O error on the storage device (EIO)`, { where, hint: 'check the device and its kernel log; run `stillpoint verify` afterwards', cause: e });
    case 'ETIMEDOUT':
    case 'ECONNRESET':
    case 'ECONNREFUSED':
    case 'ECONNABORTED':
    case 'EPIPE':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EAI_AGAIN':
    case 'EAGAIN':
    case 'EBUSY':
      return new TransientError(`${op}: ${e.message}`, { where, cause: e });
    default:
      return new StillpointError(`${op}: ${e?.message ?? String(e)}`, { where, cause: e });
  }
}

export interface RetryPolicy {
  /** Attempts after the first (default 5). */
  retries: number;
  /** First delay; doubles each time, with jitter (default 200 ms). */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const defaultRetry: RetryPolicy = { retries: 5, baseDelayMs: 200, maxDelayMs: 10_000 };

/** Run `fn`, retrying TransientError with exponential backoff. Only for idempotent operations. */
export async function withRetry<T>(what: string, fn: () => Promise<T>, policy: RetryPolicy = defaultRetry): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!(error instanceof TransientError) || attempt >= policy.retries) throw error;
      const delay = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt) * (0.5 + Math.random() / 2);
      debug('%s: transient error (%s), retry %d in %d ms', what, error.message, attempt + 1, Math.round(delay));
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * The storage target as the repository uses it: every operation of the contract is idempotent,
 * so each is retried on TransientError; listing is collected and restarted as a whole.
 */
export class RetryingStorage {
  constructor(readonly target: StorageTarget, readonly policy: RetryPolicy = defaultRetry) {}

  get name(): string {
    return this.target.name;
  }
  put(key: string, data: Buffer): Promise<void> {
    return withRetry(`put ${key}`, () => this.target.put(key, data), this.policy);
  }
  get(key: string): Promise<Buffer> {
    return withRetry(`get ${key}`, () => this.target.get(key), this.policy);
  }
  head(key: string): Promise<{ size: number } | null> {
    return withRetry(`head ${key}`, () => this.target.head(key), this.policy);
  }
  delete(key: string): Promise<void> {
    return withRetry(`delete ${key}`, () => this.target.delete(key), this.policy);
  }
  /** Part of an object (the target's ranged get, or the whole object cut when it has none). */
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    const target = this.target;
    if (target.getRange) return withRetry(`get ${key} [${offset}+${length}]`, () => target.getRange!(key, offset, length), this.policy);
    return this.get(key).then((all) => all.subarray(offset, offset + length));
  }
  get hasRangedGet(): boolean {
    return typeof this.target.getRange === 'function';
  }
  async getOrNull(key: string): Promise<Buffer | null> {
    try {
      return await this.get(key);
    } catch (error) {
      if (error instanceof NotFoundError) return null;
      throw error;
    }
  }
  list(prefix: string): Promise<string[]> {
    return withRetry(`list ${prefix}`, async () => {
      const out: string[] = [];
      for await (const key of this.target.list(prefix)) out.push(key);
      return out;
    }, this.policy);
  }
}
