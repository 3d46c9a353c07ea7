import createDebug from 'debug';
import type { HypervisorDriver } from '../contracts/driver.ts';
import type { Quiescer } from '../contracts/quiescer.ts';
import type { DiskReader } from '../contracts/reader.ts';
import type { StorageTarget } from '../contracts/storage.ts';
import type { VolumeRef, VolumeSnapshotProvider } from '../contracts/snapshot.ts';
import type { VmFacts } from '../contracts/vm.ts';
import { StillpointError } from '../errors.ts';
import type { StillpointPlugin } from '../plugin.ts';
import { createHooks, type DriverSpec, type EngineHooks, type StorageSpec } from './hooks.ts';
import { OnHostTransport, type Transport, type TransportRequest } from './transport.ts';

const debug = createDebug('stillpoint:engine');

/** A plugin the engine applied, and the hooks it tapped (recorded by an interceptor on every hook). */
export interface AppliedPlugin {
  name: string;
  /** Where it came from: built-in short name, npm package, file path, or "inline". */
  source: string;
  /** Hook names it tapped, in the order it tapped them (a hook tapped twice appears once). */
  hooks: string[];
}

/** Name of the engine's own taps (the built-in on-host transport). */
export const CORE_PLUGIN = 'stillpoint';

/**
 * The engine: the hooks (core/engine/hooks.ts) and the plugins that tap them. `runJob`
 * (core/engine/pipeline.ts) runs a job through the hooks; the provider helpers here turn a hook
 * that nobody answered into an error that says which plugin to add.
 */
export class Engine {
  readonly hooks: EngineHooks = createHooks();
  readonly plugins: AppliedPlugin[] = [];
  #applying: AppliedPlugin | undefined;

  constructor() {
    for (const [hookName, hook] of Object.entries(this.hooks)) {
      hook.intercept({
        register: (tap) => {
          this.#recordTap(hookName, tap.name);
          return tap;
        },
      });
    }
    this.plugins.push({ name: CORE_PLUGIN, source: 'built-in (core)', hooks: [] });
    const core = this.plugins[0];
    this.#applying = core;
    this.hooks.resolveTransport.tap({ name: CORE_PLUGIN, stage: 100 }, (request) =>
      request.mode === 'onHost' ? new OnHostTransport((path) => this.reader(path)) : undefined);
    this.#applying = undefined;
  }

  #recordTap(hookName: string, tapName: string): void {
    const owner = this.#applying ?? this.plugins.find((p) => p.name === tapName);
    if (owner) {
      if (!owner.hooks.includes(hookName)) owner.hooks.push(hookName);
    } else {
      this.plugins.push({ name: tapName, source: 'tapped outside apply()', hooks: [hookName] });
    }
  }

  /** Apply a plugin: it taps the hooks it serves. */
  async use(plugin: StillpointPlugin, source = 'inline'): Promise<void> {
    if (this.plugins.some((p) => p.name === plugin.name)) {
      throw new StillpointError(`plugin "${plugin.name}" is loaded twice`, { hint: 'list each plugin once in the config' });
    }
    const record: AppliedPlugin = { name: plugin.name, source, hooks: [] };
    this.plugins.push(record);
    this.#applying = record;
    try {
      await plugin.apply(this);
    } finally {
      this.#applying = undefined;
    }
    debug('applied plugin %s (%s): %o', plugin.name, source, record.hooks);
    this.hooks.pluginApplied.call(plugin.name);
  }

  /** Every plugin tapping a hook, by plugin name (for error hints). */
  tappers(hookName: keyof EngineHooks): string[] {
    return this.plugins.filter((p) => p.hooks.includes(hookName)).map((p) => p.name);
  }

  #hint(hookName: keyof EngineHooks, what: string): string {
    const t = this.tappers(hookName).filter((n) => n !== CORE_PLUGIN);
    return t.length > 0
      ? `loaded plugins tapping ${hookName} (${t.join(', ')}) do not serve it; check the type and the plugin's options`
      : `no loaded plugin provides ${what}; add the plugin to the config's "plugins"`;
  }

  driver(spec: DriverSpec): HypervisorDriver {
    const d = this.hooks.resolveDriver.call(spec);
    if (!d) throw new StillpointError(`no plugin serves driver type "${spec.type}"`, { where: `driver "${spec.name}"`, hint: this.#hint('resolveDriver', `a "${spec.type}" hypervisor driver`) });
    return d;
  }

  storage(spec: StorageSpec): StorageTarget {
    const s = this.hooks.resolveStorage.call(spec);
    if (!s) throw new StillpointError(`no plugin serves storage type "${spec.type}"`, { where: 'repository.storage', hint: this.#hint('resolveStorage', `a "${spec.type}" storage target`) });
    return s;
  }

  reader(path: string): DiskReader {
    const r = this.hooks.resolveReader.call(path);
    if (!r) throw new StillpointError('no disk reader can open this file', { where: path, hint: this.#hint('resolveReader', 'a reader for this disk format (e.g. "vhdx")') });
    return r;
  }

  quiescer(vm: VmFacts): Quiescer | undefined {
    return this.hooks.resolveQuiescer.call(vm);
  }

  snapshotProvider(volume: VolumeRef): VolumeSnapshotProvider | undefined {
    return this.hooks.resolveSnapshotProvider.call(volume);
  }

  transport(request: TransportRequest): Transport | undefined {
    return this.hooks.resolveTransport.call(request);
  }

  /** Run `ready` (after every plugin is applied). */
  async start(): Promise<void> {
    await this.hooks.ready.promise();
  }

  /** Run `shutdown`: plugins release their resources. */
  async close(): Promise<void> {
    await this.hooks.shutdown.promise();
  }
}
