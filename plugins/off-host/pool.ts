import createDebug from 'debug';
import { StillpointError } from '../../core/errors.ts';
import type { ProxyClient } from './client.ts';
import type { ProxySpec } from './options.ts';

const debug = createDebug('stillpoint:off-host');

/** A proxy slot held by one VM: release it when the VM's task is over. */
export interface ProxyLease {
  spec: ProxySpec;
  client: ProxyClient;
  release(): void;
}

interface ProxyState {
  spec: ProxySpec;
  active: number;
  client?: Promise<ProxyClient>;
  /** Why the proxy cannot be used any more in this job (it could not be started or reached). */
  down?: string;
}

/**
 * The job's proxies: which see a volume, how busy each is (at most `concurrency` VMs each), and
 * their connections (started or connected on first use, restarted once lost). `acquire` picks the
 * least busy proxy that sees the volume, skipping those already tried for this VM; it waits when
 * every candidate is full.
 */
export class ProxyPool {
  readonly #states: ProxyState[];
  readonly #connect: (spec: ProxySpec) => Promise<ProxyClient>;
  readonly #waiters: Array<() => void> = [];

  constructor(specs: ProxySpec[], connect: (spec: ProxySpec) => Promise<ProxyClient>) {
    this.#states = specs.map((spec) => ({ spec, active: 0 }));
    this.#connect = connect;
  }

  /** Proxies configured to see `volume`. */
  candidates(volume: string): ProxySpec[] {
    return this.#states.filter((s) => sees(s.spec, volume)).map((s) => s.spec);
  }

  /** Why no proxy can serve `volume`, or undefined when one can. */
  whyNot(volume: string): string | undefined {
    const states = this.#states.filter((s) => sees(s.spec, volume));
    if (this.#states.length === 0) return 'no proxy is configured';
    if (states.length === 0) return `no configured proxy sees volume "${volume}" (proxies: ${this.#states.map((s) => `${s.spec.name} sees ${s.spec.volumes.join(', ')}`).join('; ')})`;
    if (states.every((s) => s.down)) return `every proxy that sees volume "${volume}" is down (${states.map((s) => `${s.spec.name}: ${s.down}`).join('; ')})`;
    return undefined;
  }

  /** A slot on a proxy that sees `volume`, not one of `exclude`; rejects when none is left. */
  async acquire(volume: string, exclude: ReadonlySet<string> = new Set(), where = `volume "${volume}"`): Promise<ProxyLease> {
    for (;;) {
      const usable = this.#states.filter((s) => sees(s.spec, volume) && !exclude.has(s.spec.name) && !s.down);
      if (usable.length === 0) {
        const tried = [...exclude].join(', ');
        throw new StillpointError(`no proxy left to read volume "${volume}"${tried ? ` (tried: ${tried})` : ''}: ${this.whyNot(volume) ?? 'every proxy that sees it failed for this VM'}`, {
          where,
          hint: 'check the proxies (stillpoint proxy) and the config\'s off-host proxies[].volumes',
        });
      }
      const free = usable.filter((s) => s.active < s.spec.concurrency).sort((a, b) => a.active / a.spec.concurrency - b.active / b.spec.concurrency);
      if (free.length === 0) {
        await new Promise<void>((resolve) => this.#waiters.push(resolve));
        continue;
      }
      const state = free[0];
      state.active++;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        state.active--;
        this.#wake();
      };
      try {
        const client = await this.#clientOf(state);
        debug('VM slot on proxy %s (%d/%d busy)', state.spec.name, state.active, state.spec.concurrency);
        return { spec: state.spec, client, release };
      } catch (error) {
        release();
        state.down = (error as Error).message;
        debug('proxy %s is down: %s', state.spec.name, state.down);
        this.#wake();
      }
    }
  }

  async #clientOf(state: ProxyState): Promise<ProxyClient> {
    if (state.client) {
      const existing = await state.client.catch(() => undefined);
      if (existing?.alive) return existing;
      state.client = undefined;
    }
    state.client = this.#connect(state.spec);
    state.client.catch(() => { state.client = undefined; });
    return state.client;
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** The proxies connected now, by name. */
  async connected(): Promise<Map<string, ProxyClient>> {
    const out = new Map<string, ProxyClient>();
    for (const s of this.#states) {
      const client = await s.client?.catch(() => undefined);
      if (client?.alive) out.set(s.spec.name, client);
    }
    return out;
  }

  /** Says bye to every connected proxy (started proxies exit). */
  async close(): Promise<void> {
    const clients = await Promise.allSettled(this.#states.map((s) => s.client).filter((c): c is Promise<ProxyClient> => !!c));
    for (const s of this.#states) s.client = undefined;
    await Promise.all(clients.map((c) => (c.status === 'fulfilled' ? c.value.close() : undefined)));
  }
}

/** Whether the proxy sees `volume`: its `volumes` are names or glob patterns (`*` any characters, `?` one). */
export function sees(spec: ProxySpec, volume: string): boolean {
  return spec.volumes.some((pattern) => {
    if (!/[*?]/.test(pattern)) return pattern === volume;
    const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
    return new RegExp(`^${body}$`).test(volume);
  });
}
