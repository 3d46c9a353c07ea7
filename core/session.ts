import { join } from 'node:path';
import type { HypervisorDriver } from './contracts/driver.ts';
import type { Inventory, VmFacts } from './contracts/vm.ts';
import { loadConfig, type LoadedConfig } from './config/load.ts';
import type { JobConfig } from './config/schema.ts';
import { Engine } from './engine/engine.ts';
import { mergeInventories, type JobSpec } from './engine/pipeline.ts';
import { Journal } from './journal/journal.ts';
import { reconcile, type ReconcileReport } from './journal/reconcile.ts';
import { loadPlugins } from './plugins/loader.ts';
import { openRepository, type Repository } from './repository/index.ts';

/**
 * Everything a command needs from a config: the engine with its plugins applied, the drivers,
 * the journal, and the repository on demand. `close()` releases them all.
 */
export class Session {
  #drivers: HypervisorDriver[] | undefined;
  #repository: Repository | undefined;
  readonly journal: Journal;

  private constructor(readonly loaded: LoadedConfig, readonly engine: Engine) {
    this.journal = new Journal(loaded.stateDir);
  }

  static async open(options: { cwd: string; configPath?: string; env?: NodeJS.ProcessEnv }): Promise<Session> {
    const loaded = await loadConfig(options);
    const engine = new Engine();
    await loadPlugins(engine, loaded.config, { configDir: loaded.configDir, stateDir: loaded.stateDir });
    return new Session(loaded, engine);
  }

  get config() { return this.loaded.config; }

  /** Every configured driver, resolved through `resolveDriver`. */
  drivers(): HypervisorDriver[] {
    this.#drivers ??= this.config.drivers.map((d) => this.engine.driver({ name: d.name, type: d.type, options: d.options }));
    return this.#drivers;
  }

  /** Inventories of every driver, each VM limited to the driver's configured `hosts`. */
  async inventory(): Promise<{ inventory: Inventory; byDriver: Map<string, Inventory> }> {
    const byDriver = new Map<string, Inventory>();
    for (const d of this.drivers()) byDriver.set(d.name, await d.inventory());
    const inventory = mergeInventories(byDriver);
    inventory.vms = inventory.vms.filter((vm) => this.inScope(vm));
    return { inventory, byDriver };
  }

  inScope(vm: VmFacts): boolean {
    const hosts = this.config.drivers.find((d) => d.name === vm.driver)?.hosts;
    return !hosts || hosts.includes(vm.host);
  }

  job(name: string): JobConfig | undefined {
    return this.config.jobs.find((j) => j.name === name);
  }

  /** The pipeline's view of a configured job. */
  jobSpec(job: JobConfig): JobSpec {
    const vms = Array.isArray(job.vms) ? { include: job.vms, exclude: [] } : job.vms;
    return { name: job.name, mode: job.mode, consistency: job.consistency, proxy: job.proxy, vms: { ...vms, where: (vm) => this.inScope(vm) } };
  }

  /**
   * The repository; `create` (a backup) creates it when missing, `loadIndex` (a backup or restore)
   * loads its pack index at once, `writer` (a backup) joins the writer lock while the keys are derived,
   * `cache` (a backup, a restore, a prune) lets the pack index go to `<stateDir>/cache` once it
   * outgrows memory (verify reads every pack index itself, so that it sees a damaged one).
   */
  async repository(options: { create?: boolean; loadIndex?: boolean; writer?: string; cache?: boolean } = {}): Promise<Repository> {
    if (!this.#repository) {
      const { repository } = this.config;
      const storage = this.engine.storage({ type: repository.storage.type, options: repository.storage.options });
      this.#repository = await openRepository(storage, repository, {
        create: options.create, loadIndex: options.loadIndex, writer: options.writer, configDir: this.loaded.configDir,
        cacheDir: options.cache ? join(this.loaded.stateDir, 'cache') : undefined,
      });
    }
    return this.#repository;
  }

  /** Reconcile the journal with what drivers and snapshot providers report (`stillpoint cleanup`). */
  async cleanup(): Promise<ReconcileReport> {
    const { byDriver, inventory } = await this.inventory();
    const volumes = [...new Set(inventory.vms.flatMap((vm) => vm.disks.map((d) => d.volume)))].map((v) => ({ name: v, path: v }));
    return reconcile({
      journal: this.journal, drivers: this.drivers(), inventories: byDriver, volumes,
      resolveQuiescer: (vm) => this.engine.quiescer(vm),
      resolveSnapshotProvider: (v) => this.engine.snapshotProvider(v),
    });
  }

  async close(): Promise<void> {
    const errors: unknown[] = [];
    await this.#repository?.close().catch((e: unknown) => errors.push(e));
    for (const d of this.#drivers ?? []) await d.close?.().catch((e: unknown) => errors.push(e));
    await this.engine.close().catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw errors[0];
  }
}
