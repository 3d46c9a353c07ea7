/** A counting semaphore: at most `limit` holders at once, waiters served in arrival order. */
export class Semaphore {
  #active = 0;
  readonly #waiting: Array<() => void> = [];
  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`semaphore limit must be a positive integer, got ${limit}`);
  }

  get active(): number { return this.#active; }
  get waiting(): number { return this.#waiting.length; }

  async acquire(): Promise<() => void> {
    if (this.#active < this.limit) {
      this.#active++;
    } else {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else this.#active--;
    };
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** One semaphore per key (per host, per volume, per proxy, per repository), each with the same limit. */
export class KeyedSemaphore {
  readonly #byKey = new Map<string, Semaphore>();
  constructor(readonly limit: number) {}

  for(key: string): Semaphore {
    let s = this.#byKey.get(key);
    if (!s) {
      s = new Semaphore(this.limit);
      this.#byKey.set(key, s);
    }
    return s;
  }

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.for(key).run(fn);
  }
}

/** The engine's concurrency limits (config `limits`). */
export interface Limits {
  /** VMs whose checkpoint/read/merge work runs at once on one host. */
  perHost: number;
  /** Volume snapshots that exist at once on one volume. */
  perVolume: number;
  /** VMs one proxy reads at once. */
  perProxy: number;
  /** Disks stored into one repository at once. */
  perRepository: number;
  /** VMs one volume snapshot (off-host group) may hold; a volume with more VMs is split into several groups. */
  vmsPerSnapshot?: number;
}

export const DEFAULT_LIMITS: Limits = { perHost: 2, perVolume: 1, perProxy: 2, perRepository: 4, vmsPerSnapshot: 16 };

export class Limiters {
  readonly host: KeyedSemaphore;
  readonly volume: KeyedSemaphore;
  readonly proxy: KeyedSemaphore;
  readonly repository: KeyedSemaphore;
  constructor(readonly limits: Limits = DEFAULT_LIMITS) {
    this.host = new KeyedSemaphore(limits.perHost);
    this.volume = new KeyedSemaphore(limits.perVolume);
    this.proxy = new KeyedSemaphore(limits.perProxy);
    this.repository = new KeyedSemaphore(limits.perRepository);
  }
}
